"""The event model: an envelope plus a typed payload, a discriminated union on `type`.

Content blocks are kept verbatim in the Anthropic Messages format (plain dicts), so
thinking blocks and their signatures go back to the model unchanged.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

from eventstore import ids
from eventstore.config import AgentUsed as AgentUsed
from eventstore.config import SessionConfig
from eventstore.config import TurnPolicy as TurnPolicy
from eventstore.mcp import McpTool

# 2: `session_expired` states the TTL it expired under (`ttl_s`); codec.UPCASTERS reads 1.
SCHEMA_VERSION = 2

Block = dict[str, Any]

StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


class Usage(BaseModel):
    """Token counts of one model call, as the Messages API reports them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )


class Price(BaseModel):
    """What one model call was priced at, USD per million tokens, and where the price came
    from: stored with the call, so a later price change never rewrites its cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str  # the name the price list knows the model by (a dated name: its alias)
    source: str  # "genai-prices 0.2.5", "AGENTLOG_PRICES", "agentlog" (the offline model)
    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal

    def cost(self, usage: Usage) -> Decimal:
        """The cost of a call with this usage at these prices."""
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        )
        return total / 1_000_000


def add_cost(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """A sum of costs: unknown (None) as soon as one part is unknown, as SQL's `+` with NULL."""
    return None if a is None or b is None else a + b


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The JSON keys of session_started's payload in the order it always wrote them (before its
# settings were SessionConfig's), so that its records stay the same bytes. A field not named
# here follows them, in field order.
_STARTED_WIRE_ORDER = (
    "model",
    "system",
    "metadata",
    "policy",
    "max_steps",
    "token_budget",
    "tools",
    "approvals",
    "approve_after_untrusted",
    "webfetch_allow",
    "untrusted",
    "subagent_mode",
    "subagent_timeout_s",
    "subagent_attempts",
    "max_subagents",
    "max_depth",
    "depth",
    "parent_session_id",
    "parent_tool_use_id",
    "history",
    "forked_from",
    "forked_at_seq",
    "ephemeral",
    "ttl_s",
    "max_tokens",
    "context_window",
    "agent",
    "mcp_servers",
    "mcp_tools",
)


class SessionStartedPayload(SessionConfig):
    """A session's start: its settings (SessionConfig), fixed from now on, and its lineage."""

    model: str
    # A sub-agent started after untrusted content came into its parent starts with it too.
    untrusted: bool = False
    # The lineage of a child session.
    depth: int = Field(default=0, ge=0)
    parent_session_id: str | None = None
    parent_tool_use_id: str | None = None
    # A fork starts with a copy of another session's messages (no model call).
    history: list[dict[str, Any]] = Field(default_factory=list)
    forked_from: str | None = None
    forked_at_seq: int | None = None
    # A fork's MCP tools: its source's list, so that the fork is offered what the source was.
    mcp_tools: list[McpTool] | None = None

    @model_serializer(mode="wrap")
    def _in_wire_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        return {**{k: fields[k] for k in _STARTED_WIRE_ORDER if k in fields}, **fields}


class UserMessagePayload(_Payload):
    content: list[Block]
    idempotency_key: str
    request_hash: str | None = None


class TurnStartedPayload(_Payload):
    pass


class ModelRequestedPayload(_Payload):
    model: str
    attempt: int = 1
    # The tool_result blocks of the previous step, sent as the user message before this call.
    tool_results: list[Block] = Field(default_factory=list)


class AssistantMessagePayload(_Payload):
    model: str
    content: list[Block]
    stop_reason: StopReason | None
    usage: Usage = Usage()
    # None: the model could not be priced (unknown, never 0). Events from before prices
    # were stored have a cost and no price.
    cost_usd: Decimal | None = Decimal(0)
    price: Price | None = None
    duration_ms: int = 0
    # The MCP servers' tools the call was offered, on a session's first call that had any:
    # every later call, approval and run reads this list, so replay sees what the model saw.
    mcp_tools: list[McpTool] | None = None


class CompactionRequestedPayload(_Payload):
    """A compaction the next model call needs: summarise the messages before `through` (the
    previous summary included) and clear the tool results before `clear_before`."""

    model: str
    through: int = Field(ge=0)
    clear_before: int = Field(ge=0)
    # The estimated input tokens of the call, before compaction (eventstore/context.py).
    tokens_before: int = Field(default=0, ge=0)


class ContextCompactedPayload(_Payload):
    """A compaction as the model worker made it: from now on the model is sent `summary` in
    place of the messages before `through`, and a placeholder for the content of the tool
    results before `clear_before`. The messages themselves stay in the log and in SQL."""

    # The model that wrote the summary; None when no call was needed (clearing was enough).
    model: str | None
    through: int = Field(ge=0)
    clear_before: int = Field(ge=0)
    summary: str | None
    # Estimated input tokens of the call before, and after it (before the step's tool results).
    tokens_before: int = Field(default=0, ge=0)
    tokens_after: int = Field(default=0, ge=0)
    usage: Usage = Usage()
    cost_usd: Decimal | None = Decimal(0)
    price: Price | None = None
    duration_ms: int = 0


class ToolRequestedPayload(_Payload):
    tool_use_id: str
    name: str
    input: dict[str, Any]


class ToolResultPayload(_Payload):
    tool_use_id: str
    content: list[Block] | str
    is_error: bool = False
    duration_ms: int = 0
    # A result cut to size: the whole one is in Postgres (tool_outputs) under this digest.
    stored_sha256: str | None = None
    total_chars: int | None = None


class ApprovalRequestedPayload(_Payload):
    approval_id: str
    tool_use_id: str
    name: str
    input: dict[str, Any]


class ApprovalDecidedPayload(_Payload):
    approval_id: str
    tool_use_id: str
    approved: bool
    reason: str | None = None


class SubagentRequestedPayload(_Payload):
    """A Task call's attempt: the child session to start, and the parent's limits on it."""

    tool_use_id: str
    child_session_id: str
    prompt: str
    description: str = ""
    tools: list[str] | None = None
    model: str = ""
    attempt: int = Field(default=1, ge=1)
    max_attempts: int = Field(default=2, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    depth: int = Field(default=1, ge=1)
    # The parent's rules the child inherits (SessionStartedPayload fields).
    limits: dict[str, Any] = Field(default_factory=dict)


class SubagentCompletedPayload(_Payload):
    """A child's answer to its parent's Task call (the attempt's, a stale one is ignored)."""

    tool_use_id: str
    child_session_id: str
    result: str
    is_error: bool = False
    attempt: int = Field(default=1, ge=1)
    duration_ms: int = 0


class TurnCompletedPayload(_Payload):
    stop_reason: StopReason | None
    # Error results closing tool_use blocks that will never run (the transcript stays valid).
    tool_results: list[Block] = Field(default_factory=list)


class TurnFailedPayload(_Payload):
    reason: str
    tool_results: list[Block] = Field(default_factory=list)


class SessionExpiredPayload(_Payload):
    idle_s: int
    # The TTL in force when it expired, so that the log says why (None: not known, as in a
    # version 1 event, which did not say).
    ttl_s: int | None


class SessionDeletedPayload(_Payload):
    pass


class _Envelope(BaseModel):
    """Fields every event carries; `type` is the discriminator of the union."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    # A stored id: a client's (up to 200 characters) scoped by its tenant (up to 64), `ids`.
    session_id: str = Field(min_length=1, max_length=300)
    tenant_id: str = "default"
    turn_id: str | None = None
    step: int | None = None
    causation_id: uuid.UUID | None = None
    correlation_id: str | None = None
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION
    # W3C trace context of the span this event belongs to (observability only; never decides).
    traceparent: str | None = Field(default=None, pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class SessionStarted(_Envelope):
    type: Literal["session_started"] = "session_started"
    payload: SessionStartedPayload


class UserMessage(_Envelope):
    type: Literal["user_message"] = "user_message"
    payload: UserMessagePayload


class TurnStarted(_Envelope):
    type: Literal["turn_started"] = "turn_started"
    payload: TurnStartedPayload = TurnStartedPayload()


class ModelRequested(_Envelope):
    type: Literal["model_requested"] = "model_requested"
    payload: ModelRequestedPayload


class AssistantMessage(_Envelope):
    type: Literal["assistant_message"] = "assistant_message"
    payload: AssistantMessagePayload


class CompactionRequested(_Envelope):
    type: Literal["compaction_requested"] = "compaction_requested"
    payload: CompactionRequestedPayload


class ContextCompacted(_Envelope):
    type: Literal["context_compacted"] = "context_compacted"
    payload: ContextCompactedPayload


class ToolRequested(_Envelope):
    type: Literal["tool_requested"] = "tool_requested"
    payload: ToolRequestedPayload


class ToolResult(_Envelope):
    type: Literal["tool_result"] = "tool_result"
    payload: ToolResultPayload


class ApprovalRequested(_Envelope):
    type: Literal["approval_requested"] = "approval_requested"
    payload: ApprovalRequestedPayload


class ApprovalDecided(_Envelope):
    type: Literal["approval_decided"] = "approval_decided"
    payload: ApprovalDecidedPayload


class SubagentRequested(_Envelope):
    type: Literal["subagent_requested"] = "subagent_requested"
    payload: SubagentRequestedPayload


class SubagentCompleted(_Envelope):
    type: Literal["subagent_completed"] = "subagent_completed"
    payload: SubagentCompletedPayload


class TurnCompleted(_Envelope):
    type: Literal["turn_completed"] = "turn_completed"
    payload: TurnCompletedPayload


class TurnFailed(_Envelope):
    type: Literal["turn_failed"] = "turn_failed"
    payload: TurnFailedPayload


class SessionExpired(_Envelope):
    type: Literal["session_expired"] = "session_expired"
    payload: SessionExpiredPayload


class SessionDeleted(_Envelope):
    type: Literal["session_deleted"] = "session_deleted"
    payload: SessionDeletedPayload = SessionDeletedPayload()


Event = Annotated[
    SessionStarted
    | UserMessage
    | TurnStarted
    | ModelRequested
    | AssistantMessage
    | ToolRequested
    | ToolResult
    | ApprovalRequested
    | ApprovalDecided
    | SubagentRequested
    | SubagentCompleted
    | TurnCompleted
    | TurnFailed
    | SessionExpired
    | SessionDeleted
    | CompactionRequested
    | ContextCompacted,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EVENT_TYPES: tuple[str, ...] = (
    "session_started",
    "user_message",
    "turn_started",
    "model_requested",
    "assistant_message",
    "tool_requested",
    "tool_result",
    "approval_requested",
    "approval_decided",
    "subagent_requested",
    "subagent_completed",
    "turn_completed",
    "turn_failed",
    "session_expired",
    "session_deleted",
    "compaction_requested",
    "context_compacted",
)


def now() -> datetime:
    """Producer time; informational only, order is the log's."""
    return datetime.now(UTC)


def session_started(
    session_id: str,
    config: SessionConfig | None = None,
    *,
    tenant_id: str = "default",
    at: datetime | None = None,
    **fields: Any,
) -> SessionStarted:
    """The first event of a session; its id depends on the session alone.

    Its payload is `config` with `fields` over it: settings (`model=...`, `max_steps=...`) and
    the start's lineage (depth, parent ids, history, ...), the other fields of the payload.
    """
    values = {**config.__dict__, **fields} if config is not None else fields
    return SessionStarted(
        event_id=ids.derive(ids.event_key(session_id, "session_started")),
        session_id=session_id,
        tenant_id=tenant_id,
        occurred_at=at or now(),
        payload=SessionStartedPayload(**values),
    )


def user_message(
    session_id: str,
    *,
    text: str | None = None,
    content: list[Block] | None = None,
    idempotency_key: str,
    tenant_id: str = "default",
    request_hash: str | None = None,
    at: datetime | None = None,
) -> UserMessage:
    """A user's turn; the same idempotency key always gives the same event and turn."""
    blocks = content if content is not None else [{"type": "text", "text": text or ""}]
    turn_id = ids.turn_id_for(session_id, idempotency_key)
    return UserMessage(
        event_id=ids.derive(ids.event_key(session_id, "user", idempotency_key)),
        session_id=session_id,
        tenant_id=tenant_id,
        turn_id=turn_id,
        correlation_id=turn_id,
        occurred_at=at or now(),
        payload=UserMessagePayload(
            content=blocks, idempotency_key=idempotency_key, request_hash=request_hash
        ),
    )


def tool_result_block(tool_use_id: str, content: list[Block] | str, is_error: bool) -> Block:
    """The tool_result content block that answers a tool_use block."""
    block: Block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}
    if is_error:
        block["is_error"] = True
    return block


def tool_result(
    session_id: str,
    *,
    turn_id: str | None,
    step: int | None,
    tool_use_id: str,
    content: list[Block] | str,
    is_error: bool = False,
    tenant_id: str = "default",
    causation_id: uuid.UUID | None = None,
    duration_ms: int = 0,
    stored_sha256: str | None = None,
    total_chars: int | None = None,
    at: datetime | None = None,
) -> ToolResult:
    """The one result of a tool call. Its id depends on the call alone, so whoever answers
    first (the executor, or the reactor closing an interrupted turn) is the answer."""
    return ToolResult(
        event_id=ids.derive(ids.event_key(session_id, turn_id, step, "tool_result", tool_use_id)),
        session_id=session_id,
        tenant_id=tenant_id,
        turn_id=turn_id,
        step=step,
        causation_id=causation_id,
        correlation_id=turn_id,
        occurred_at=at or now(),
        payload=ToolResultPayload(
            tool_use_id=tool_use_id,
            content=content,
            is_error=is_error,
            duration_ms=duration_ms,
            stored_sha256=stored_sha256,
            total_chars=total_chars,
        ),
    )


def approval_id_for(session_id: str, turn_id: str | None, step: int | None, tool_use_id: str) -> str:
    """The id of the approval a tool call waits for, derived from the call."""
    return str(ids.derive(ids.event_key(session_id, turn_id, step, "approval", tool_use_id)))


def approval_decided(
    session_id: str,
    *,
    tenant_id: str,
    turn_id: str | None,
    step: int | None,
    approval_id: str,
    tool_use_id: str,
    approved: bool,
    reason: str | None = None,
    at: datetime | None = None,
) -> ApprovalDecided:
    """A human's decision; its id depends on the approval alone, so the first decision holds."""
    return ApprovalDecided(
        event_id=ids.derive(ids.event_key(session_id, "approval_decided", approval_id)),
        session_id=session_id,
        tenant_id=tenant_id,
        turn_id=turn_id,
        step=step,
        correlation_id=turn_id,
        occurred_at=at or now(),
        payload=ApprovalDecidedPayload(
            approval_id=approval_id, tool_use_id=tool_use_id, approved=approved, reason=reason
        ),
    )


SUBAGENT_SYSTEM = (
    "You are a sub-agent: another agent delegated this task to you. Do it, then answer with the"
    " result only; your answer is returned to that agent as the result of its Task call."
)


def subagent_system(description: str) -> str:
    """The system prompt of a sub-agent's session (both models)."""
    return SUBAGENT_SYSTEM + (f"\n\nThe task: {description}" if description else "")


def child_session_id(parent_session_id: str, tool_use_id: str, attempt: int) -> str:
    """The session a Task call's attempt runs as: derived, so a redelivery starts no other."""
    return "sub-" + str(ids.derive(ids.event_key(parent_session_id, "subagent", tool_use_id, attempt)))
