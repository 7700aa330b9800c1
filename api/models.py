"""The api's response bodies as pydantic models: the OpenAPI schema, and the Python client's types."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TurnPolicy = Literal["enqueue", "reject", "interrupt"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class Tokens(_Body):
    input: int
    output: int
    cache_read: int
    cache_write: int


class SessionMetadata(_Body):
    model: str | None
    status: str
    turn_count: int
    total_tokens: Tokens
    session_cost: str | None = Field(
        description="USD, a decimal string; null when unknown (a call no price source knows)"
    )
    started_at: str | None
    last_activity_at: str | None
    tenant_id: str
    user_metadata: dict[str, Any]
    parent_session_id: str | None = None


class MessageView(_Body):
    role: Literal["user", "assistant"]
    content: list[dict[str, Any]]
    turn_id: str | None = None


class SessionView(_Body):
    id: str
    messages: list[MessageView]
    metadata: SessionMetadata


class SessionSummary(_Body):
    id: str
    status: str
    model: str | None
    turn_count: int
    cost_usd: str | None = Field(description="USD, a decimal string; null when unknown")
    started_at: str | None
    last_activity_at: str | None
    parent_session_id: str | None = None
    total_tokens: Tokens | None = None


class SessionPage(_Body):
    data: list[SessionSummary]
    has_more: bool
    first_id: str | None
    last_id: str | None


class AgentView(_Body):
    """An agent of the agents file: its settings (as POST /v1/sessions takes them) and digest."""

    name: str
    sha256: str = Field(description="what a session started from it records")
    description: str | None = None
    model: str | None = None
    system: str | None = None
    tools: list[str] | None = None


class AgentList(_Body):
    data: list[AgentView]


class TurnAccepted(_Body):
    session_id: str
    turn_id: str
    idempotency_key: str
    status: str


class TurnView(_Body):
    turn_id: str
    session_id: str
    status: Literal["queued", "running", "completed", "failed"]
    stop_reason: str | None
    error: str | None
    steps: int
    user_content: list[dict[str, Any]]
    output_text: str
    messages: list[dict[str, Any]]
    usage: Tokens
    cost: str | None = Field(description="USD, a decimal string; null when unknown")
    requested_at: str | None
    completed_at: str | None


class EventView(_Body):
    seq: int
    event_id: str
    type: str
    session_id: str
    tenant_id: str
    turn_id: str | None
    step: int | None
    causation_id: str | None
    correlation_id: str | None
    occurred_at: str | None
    schema_version: int
    payload: dict[str, Any]


class EventPage(_Body):
    data: list[EventView]
    has_more: bool
    first_id: int | None
    last_id: int | None


class TextDelta(_Body):
    """An ephemeral SSE event (`event: text_delta`, no id): text as the model streams it."""

    turn_id: str | None
    step: int | None
    text: str


class AgentRunResult(TurnView):
    """`POST /v1/agent/run` and `POST /v1/subagent/run`: the finished turn of a new session."""


class TurnSummary(_Body):
    """A turn as a session's list of turns shows it: outcome, usage, cost and latency."""

    turn_id: str
    status: Literal["queued", "running", "completed", "failed"]
    stop_reason: str | None
    error: str | None
    steps: int
    interrupted: bool
    usage: Tokens
    cost: str | None = Field(description="USD, a decimal string; null when unknown")
    requested_at: str | None
    started_at: str | None
    completed_at: str | None
    duration_ms: int | None = Field(description="from the turn's start (or request) to its end")


class TurnList(_Body):
    data: list[TurnSummary]


class SubagentAttempt(_Body):
    attempt: int
    child_session_id: str
    status: str


class ApprovalState(_Body):
    approval_id: str
    status: Literal["pending", "approved", "denied", "expired"]


class ToolCallView(_Body):
    """A tool call with its input, result, duration and idempotency class."""

    tool_use_id: str
    turn_id: str | None
    name: str
    input: dict[str, Any]
    status: Literal["requested", "waiting_for_approval", "ok", "error"]
    result: Any = Field(default=None, description="the tool_result's content, as the model got it")
    is_error: bool | None
    requested_at: str | None
    completed_at: str | None
    duration_ms: int | None
    idempotency_class: Literal["read_or_fetch", "guarded_write", "write", "agent"] | None = Field(
        description="as the effect ledger recorded the run: a write or guarded write records its"
        " intent first, a read or fetch only its result, a sub-agent is a child session;"
        " null when the call did not run (waiting, denied, or closed without running)"
    )
    approval: ApprovalState | None = Field(description="the human's decision, if the call needed one")
    subagents: list[SubagentAttempt] = Field(description="the child sessions of a Task call, by attempt")


class ToolCallList(_Body):
    data: list[ToolCallView]


class ApprovalView(_Body):
    approval_id: str
    session_id: str
    tenant_id: str
    turn_id: str | None
    step: int | None
    tool_use_id: str
    name: str
    input: dict[str, Any]
    status: Literal["pending", "approved", "denied", "expired"]
    reason: str | None
    requested_at: str | None
    decided_at: str | None


class ApprovalList(_Body):
    data: list[ApprovalView]


class InstanceStats(_Body):
    """One instance's figures (or a role's, or the fleet's), totals since each started."""

    instance_id: str
    role: str
    up: bool
    work: float = Field(description="turns, model calls, tool calls, http requests or events projected")
    errors: float
    error_rate: float | None
    mean_duration_s: float | None
    steps_per_turn: float | None
    tokens_in: float
    tokens_out: float
    cost_usd: float
    lag: float
    dead_letters: float
    flags: list[str] = Field(description="why the instance stands out from its role's peers")


class Outlier(_Body):
    instance_id: str
    role: str
    flags: list[str]


class FleetView(_Body):
    """What `agentlog top --once --json` shows: every live instance, each role, the fleet."""

    instances: list[InstanceStats]
    roles: dict[str, InstanceStats]
    fleet: InstanceStats
    outliers: list[Outlier]
