"""Event -> row operations, as values. Pure: the store turns these into SQL.

Each operation names the rows it touches; the store applies them only for the first copy
of an event id, so a duplicate changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventstore import events as ev
from eventstore.events import Block, Event


@dataclass(frozen=True)
class SessionStart:
    model: str
    system: str | None
    metadata: dict[str, Any]
    policy: str
    max_steps: int
    token_budget: int | None
    ttl_s: int | None
    parent_session_id: str | None
    parent_tool_use_id: str | None
    depth: int
    history: list[dict[str, Any]]
    forked_from: str | None
    forked_at_seq: int | None
    ephemeral: bool
    context_window: int | None


@dataclass(frozen=True)
class TurnRequest:
    turn_id: str
    idempotency_key: str
    content: list[Block]


@dataclass(frozen=True)
class TurnStart:
    turn_id: str


@dataclass(frozen=True)
class ModelStep:
    turn_id: str
    step: int
    tool_results: list[Block]


@dataclass(frozen=True)
class AssistantReply:
    turn_id: str | None
    model: str
    content: list[Block]
    stop_reason: str | None
    usage: ev.Usage
    cost_usd: Decimal | None


@dataclass(frozen=True)
class CompactionMade:
    """A compaction's summary call, paid for like any model call (the event row says the rest)."""

    turn_id: str | None
    usage: ev.Usage
    cost_usd: Decimal | None


@dataclass(frozen=True)
class ToolRequest:
    turn_id: str | None
    step: int | None
    tool_use_id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolOutcome:
    tool_use_id: str
    content: list[Block] | str
    is_error: bool
    duration_ms: int


@dataclass(frozen=True)
class ApprovalRequest:
    approval_id: str
    tool_use_id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ApprovalDecision:
    approval_id: str
    approved: bool
    reason: str | None


@dataclass(frozen=True)
class SubagentStart:
    payload: ev.SubagentRequestedPayload


@dataclass(frozen=True)
class SubagentEnd:
    payload: ev.SubagentCompletedPayload


@dataclass(frozen=True)
class TurnEnd:
    turn_id: str
    status: str
    stop_reason: str | None
    error: str | None
    tool_results: list[Block]


@dataclass(frozen=True)
class SessionExpire:
    pass


@dataclass(frozen=True)
class SessionDelete:
    pass


Op = (
    SessionStart
    | TurnRequest
    | TurnStart
    | ModelStep
    | AssistantReply
    | CompactionMade
    | ToolRequest
    | ToolOutcome
    | ApprovalRequest
    | ApprovalDecision
    | SubagentStart
    | SubagentEnd
    | TurnEnd
    | SessionExpire
    | SessionDelete
)


@dataclass(frozen=True)
class Projection:
    """What one event does to the derived tables, besides its row in `events`."""

    event: Event
    at: datetime
    ops: tuple[Op, ...]


def project(event: Event) -> Projection:
    """The row operations of one event."""
    ops: tuple[Op, ...]
    match event:
        case ev.SessionStarted(payload=p):
            ops = (
                SessionStart(
                    p.model,
                    p.system,
                    p.metadata,
                    p.policy,
                    p.max_steps,
                    p.token_budget,
                    p.ttl_s,
                    p.parent_session_id,
                    p.parent_tool_use_id,
                    p.depth,
                    p.history,
                    p.forked_from,
                    p.forked_at_seq,
                    p.ephemeral,
                    p.context_window,
                ),
            )
        case ev.UserMessage(payload=p):
            assert event.turn_id is not None
            ops = (TurnRequest(event.turn_id, p.idempotency_key, p.content),)
        case ev.TurnStarted():
            assert event.turn_id is not None
            ops = (TurnStart(event.turn_id),)
        case ev.ModelRequested(payload=p):
            assert event.turn_id is not None
            ops = (ModelStep(event.turn_id, event.step or 1, p.tool_results),)
        case ev.AssistantMessage(payload=p):
            ops = (AssistantReply(event.turn_id, p.model, p.content, p.stop_reason, p.usage, p.cost_usd),)
        case ev.ContextCompacted(payload=p):
            ops = (CompactionMade(event.turn_id, p.usage, p.cost_usd),)
        case ev.ToolRequested(payload=p):
            ops = (ToolRequest(event.turn_id, event.step, p.tool_use_id, p.name, p.input),)
        case ev.ToolResult(payload=p):
            ops = (ToolOutcome(p.tool_use_id, p.content, p.is_error, p.duration_ms),)
        case ev.ApprovalRequested(payload=p):
            ops = (ApprovalRequest(p.approval_id, p.tool_use_id, p.name, p.input),)
        case ev.ApprovalDecided(payload=p):
            ops = (ApprovalDecision(p.approval_id, p.approved, p.reason),)
        case ev.SubagentRequested(payload=p):
            ops = (SubagentStart(p),)
        case ev.SubagentCompleted(payload=p):
            ops = (SubagentEnd(p),)
        case ev.TurnCompleted(payload=p):
            assert event.turn_id is not None
            ops = (TurnEnd(event.turn_id, "completed", p.stop_reason, None, p.tool_results),)
        case ev.TurnFailed(payload=p):
            assert event.turn_id is not None
            ops = (TurnEnd(event.turn_id, "failed", None, p.reason, p.tool_results),)
        case ev.SessionExpired():
            ops = (SessionExpire(),)
        case ev.SessionDeleted():
            ops = (SessionDelete(),)
        case _:
            ops = ()
    return Projection(event=event, at=event.occurred_at, ops=ops)
