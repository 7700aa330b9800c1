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
