"""The event model: an envelope plus a typed payload, a discriminated union on `type`.

Content blocks are kept verbatim in the Anthropic Messages format (plain dicts), so
thinking blocks and their signatures go back to the model unchanged.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from eventstore import ids

SCHEMA_VERSION = 1

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


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionStartedPayload(_Payload):
    model: str
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class UserMessagePayload(_Payload):
    content: list[Block]
    idempotency_key: str
    request_hash: str | None = None


class TurnStartedPayload(_Payload):
    pass


class ModelRequestedPayload(_Payload):
    model: str
    attempt: int = 1


class AssistantMessagePayload(_Payload):
    model: str
    content: list[Block]
    stop_reason: StopReason | None
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
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


class SubagentRequestedPayload(_Payload):
    tool_use_id: str
    child_session_id: str
    prompt: str


class SubagentCompletedPayload(_Payload):
    tool_use_id: str
    child_session_id: str
    result: str
    is_error: bool = False


class TurnCompletedPayload(_Payload):
    stop_reason: StopReason | None


class TurnFailedPayload(_Payload):
    reason: str


class SessionDeletedPayload(_Payload):
    pass


class _Envelope(BaseModel):
    """Fields every event carries; `type` is the discriminator of the union."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    session_id: str = Field(min_length=1, max_length=200)
    tenant_id: str = "default"
    turn_id: str | None = None
    step: int | None = None
    causation_id: uuid.UUID | None = None
    correlation_id: str | None = None
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION


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


class ToolRequested(_Envelope):
    type: Literal["tool_requested"] = "tool_requested"
    payload: ToolRequestedPayload


class ToolResult(_Envelope):
    type: Literal["tool_result"] = "tool_result"
    payload: ToolResultPayload


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
    | SubagentRequested
    | SubagentCompleted
    | TurnCompleted
    | TurnFailed
    | SessionDeleted,
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
    "subagent_requested",
    "subagent_completed",
    "turn_completed",
    "turn_failed",
    "session_deleted",
)


def now() -> datetime:
    """Producer time; informational only, order is the log's."""
    return datetime.now(UTC)


def session_started(
    session_id: str,
    *,
    model: str,
    tenant_id: str = "default",
    system: str | None = None,
    metadata: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> SessionStarted:
    """The first event of a session; its id depends on the session alone."""
    return SessionStarted(
        event_id=ids.derive(ids.event_key(session_id, "session_started")),
        session_id=session_id,
        tenant_id=tenant_id,
        occurred_at=at or now(),
        payload=SessionStartedPayload(model=model, system=system, metadata=metadata or {}),
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
