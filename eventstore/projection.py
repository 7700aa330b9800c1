"""The projection as a pure function of the fold: (state before, event, state after) -> rows.

A session's rules live in one place, `eventstore.state`. The rows of `sessions`, `turns` and
`messages` are read off the folded state (a turn started, an answer taken into the transcript,
an interrupted turn, the status, the usage); nothing here decides them again. What is not a
session's state (a tool call's executor row, an approval's row, a sub-agent attempt's row) is
written from the event as row operations, each guarded by its own row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from eventstore import admission, ids
from eventstore import events as ev
from eventstore.events import Block, Event
from eventstore.state import SessionState, Turn

Row = tuple[Any, ...]

EVENT_COLUMNS = (
    "event_id",
    "session_id",
    "seq",
    "tenant_id",
    "type",
    "turn_id",
    "step",
    "causation_id",
    "correlation_id",
    "occurred_at",
    "schema_version",
    "payload",
    "log_epoch",
    "log_partition",
    "log_offset",
    "traceparent",
)
SESSION_COLUMNS = (
    "session_id",
    "tenant_id",
    "model",
    "system_prompt",
    "metadata",
    "status",
    "pending_turns",
    "turn_count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "last_seq",
    "started_at",
    "last_activity_at",
    "policy",
    "max_steps",
    "token_budget",
    "ttl_s",
    "expired_at",
    "parent_session_id",
    "parent_tool_use_id",
    "depth",
    "forked_from",
    "forked_at_seq",
    "ephemeral",
    "context_window",
)
TURN_COLUMNS = (
    "turn_id",
    "session_id",
    "tenant_id",
    "status",
    "idempotency_key",
    "user_content",
    "steps",
    "stop_reason",
    "error",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "requested_at",
    "started_at",
    "completed_at",
    "interrupted",
)
MESSAGE_COLUMNS = (
    "message_id",
    "session_id",
    "tenant_id",
    "turn_id",
    "seq",
    "ord",
    "role",
    "content",
    "model",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "created_at",
)
# Columns a row keeps from its first write: what made it (a later write has only placeholders).
SESSION_KEPT = frozenset({"session_id", "tenant_id", "forked_at_seq"})
TURN_KEPT = frozenset(
    {"turn_id", "session_id", "tenant_id", "idempotency_key", "user_content", "requested_at"}
)
_COMPLETED_AT = TURN_COLUMNS.index("completed_at")
_TURN_ID_AT = TURN_COLUMNS.index("turn_id")
_STATUS_AT = TURN_COLUMNS.index("status")
_TURN_KEPT_AT = tuple(i for i, c in enumerate(TURN_COLUMNS) if c in TURN_KEPT)


def _raw(value: bytes) -> bytes:
    return value


def _json(value: Any) -> Jsonb:
    return Jsonb(value)


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
class ApprovalsClosed:
    """The approvals a turn no longer waits for: it ended."""

    turn_id: str


@dataclass(frozen=True)
class SubagentStart:
    payload: ev.SubagentRequestedPayload


@dataclass(frozen=True)
class SubagentEnd:
    payload: ev.SubagentCompletedPayload


Op = (
    ToolRequest
    | ToolOutcome
    | ApprovalRequest
    | ApprovalDecision
    | ApprovalsClosed
    | SubagentStart
    | SubagentEnd
)


@dataclass(frozen=True)
class Rows:
    """What one event writes: its `events` row, its session's and changed turns' rows as they
    now are, the messages it added to the transcript, and row operations, in this order."""

    event: Event
    event_row: Row
    # The session as it now is (its row is read off it once per batch: `session_row`), and
    # what its row keeps that the state does not: when it expired, where a fork was cut.
    after: SessionState
    expired_at: datetime | None
    forked_at_seq: int | None
    turns: tuple[Row, ...]
    messages: tuple[Row, ...]
    ops: tuple[Op, ...]
    delete: bool = False


def finished_turns(rows: Rows) -> list[str]:
    """The ids of the turns these rows show completed or failed."""
    return [str(row[_TURN_ID_AT]) for row in rows.turns if row[_STATUS_AT] in ("completed", "failed")]


def refusal(before: SessionState, event: Event) -> str | None:
    """Why the projection writes no row for this event, or None. The one place an event is
    refused: a session is never invented by an event of a session that was never started (a
    deletion is kept: its tombstone and the ledger's rows go whatever the projection holds)."""
    # The same rules as every other consumer's (never started; another tenant's).
    return admission.refusal(before, event)


def project(before: SessionState, event: Event, after: SessionState, where: tuple[str, int, int]) -> Rows:
    """The rows of an event the fold took (`after` is `evolve(before, event)`, not `before`),
    read at (log epoch, partition, offset)."""
    seq = after.event_count
    event_row = _event_row(event, seq, where)
    if isinstance(event, ev.SessionDeleted):
        return Rows(event, event_row, after, None, None, (), (), (), delete=True)
    expired = isinstance(event, ev.SessionExpired) and after.status == "expired"
    return Rows(
        event,
        event_row,
        after,
        event.occurred_at if expired else None,
        event.payload.forked_at_seq if isinstance(event, ev.SessionStarted) else None,
        _turn_rows(before, event, after),
        _message_rows(before, event, after, seq),
        _ops(before, event, after),
    )


def _event_row(event: Event, seq: int, where: tuple[str, int, int]) -> Row:
    payload = event.payload.__pydantic_serializer__.to_json(event.payload)
    epoch, partition, offset = where
    return (
        event.event_id,
        event.session_id,
        seq,
        event.tenant_id,
        event.type,
        event.turn_id,
        event.step,
        event.causation_id,
        event.correlation_id,
        event.occurred_at,
        event.schema_version,
        Jsonb(payload, dumps=_raw),
        epoch,
        partition,
        offset,
        event.traceparent,
    )


def session_row(s: SessionState, expired_at: datetime | None, forked_at_seq: int | None) -> Row:
    """The session's row as its folded state has it."""
    u = s.usage
    return (
        s.session_id,
        s.tenant_id,
        s.config.model,
        s.config.system,
        _json(s.config.metadata),
        "idle" if s.status == "new" else s.status,
        s.turns.open_count(),
        s.turn_count,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        s.cost_usd,
        s.event_count,
        s.started_at,
        s.last_activity_at,
        s.config.policy,
        s.config.max_steps,
        s.config.token_budget,
        s.config.ttl_s,
        expired_at,
        s.parent_session_id,
        s.parent_tool_use_id,
        s.depth,
        s.forked_from,
        forked_at_seq,
        s.config.ephemeral,
        s.config.context_window,
    )


def _turn_row(turn: Turn, event: Event, created: bool, completed_at: datetime | None) -> Row:
    """A turn's row as the fold has it; what made it comes from its user message (`created`)."""
    u = turn.usage
    ended = turn.status in ("completed", "failed")
    message = event.payload if created and isinstance(event, ev.UserMessage) else None
    return (
        turn.turn_id,
        event.session_id,
        event.tenant_id,
        turn.status,
        message.idempotency_key if message is not None else "",
        _json(list(turn.user_content)),
        turn.step,
        turn.stop_reason if ended else None,
        turn.error,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
        turn.cost_usd,
        event.occurred_at,
        turn.started_at,
        completed_at,
        turn.interrupted,
    )


def merge_turn(older: Row, newer: Row) -> Row:
    """A turn's two rows of one batch as one: what made it from the older, the rest the newer's."""
    row = list(newer)
    for i in _TURN_KEPT_AT:
        row[i] = older[i]
    if row[_COMPLETED_AT] is None:
        row[_COMPLETED_AT] = older[_COMPLETED_AT]
    return tuple(row)


def _turn_rows(before: SessionState, event: Event, after: SessionState) -> tuple[Row, ...]:
    """The rows of the turns this event changed (its own, and the one it may interrupt)."""
    out = []
    for turn_id in dict.fromkeys((event.turn_id, before.current_turn)):
        if turn_id is None:
            continue
        old, new = before.turn(turn_id), after.turn(turn_id)
        if new is None or new is old:
            continue
        was_open = old is not None and old.status in ("queued", "running")
        completed = event.occurred_at if was_open and new.status in ("completed", "failed") else None
        out.append(_turn_row(new, event, old is None, completed))
    return tuple(out)


def _message_rows(before: SessionState, event: Event, after: SessionState, seq: int) -> tuple[Row, ...]:
    """The messages this event added to the transcript."""
    added = len(after.messages) - len(before.messages)
    if added <= 0:
        return ()
    if isinstance(event, ev.SessionStarted):  # a fork's history, in one event
        return tuple(
            (
                ids.derive(ids.event_key(event.session_id, "history", i)),
                event.session_id,
                event.tenant_id,
                None,
                seq,
                i,
                m.role,
                _json(list(m.content)),
                *(None,) * 7,
                event.occurred_at,
            )
            for i, m in enumerate(after.messages[len(before.messages) :])
        )
    message = after.messages[-1]
    model: str | None = None
    stop: str | None = None
    tokens: tuple[int | None, ...] = (None,) * 4
    cost: Decimal | None = None
    if isinstance(event, ev.AssistantMessage):
        p = event.payload
        model, stop, cost = p.model, p.stop_reason, p.cost_usd
        u = p.usage
        tokens = (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens)
    return (
        (
            event.event_id,
            event.session_id,
            event.tenant_id,
            event.turn_id,
            seq,
            0,
            message.role,
            _json(list(message.content)),
            model,
            stop,
            *tokens,
            cost,
            event.occurred_at,
        ),
    )


def _ops(before: SessionState, event: Event, after: SessionState) -> tuple[Op, ...]:
    """The row operations of the rows that are not the session's state."""
    match event:
        case ev.ToolRequested(payload=p):
            return (ToolRequest(event.turn_id, event.step, p.tool_use_id, p.name, p.input),)
        case ev.ToolResult(payload=p):
            return (ToolOutcome(p.tool_use_id, p.content, p.is_error, p.duration_ms),)
        case ev.ApprovalRequested(payload=p):
            return (ApprovalRequest(p.approval_id, p.tool_use_id, p.name, p.input),)
        case ev.ApprovalDecided(payload=p):
            return (ApprovalDecision(p.approval_id, p.approved, p.reason),)
        case ev.SubagentRequested(payload=p):
            return (SubagentStart(p),)
        case ev.SubagentCompleted(payload=p):
            return (SubagentEnd(p),)
        case ev.TurnCompleted() | ev.TurnFailed():
            old, new = before.turn(event.turn_id), after.turn(event.turn_id)
            if old is not None and new is not None and old.status != new.status:
                assert event.turn_id is not None
                return (ApprovalsClosed(event.turn_id),)
    return ()
