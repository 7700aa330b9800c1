"""The SQL of the projection's rows: a batch's rows (`eventstore.projection`) in a few statements.

The rows of a batch are gathered per table: `events` and `messages` inserted in one statement
each, `sessions` and `turns` upserted once per session and turn (the row as the latest event
left it), and the row operations of tool calls, approvals and sub-agents sent in log order in
one pipeline. A deletion empties every table of its session.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from eventstore import pipelined, vault
from eventstore import projection as pj
from eventstore.events import Event
from eventstore.state import SessionState

Conn = psycopg.AsyncConnection[Any]

# Per session (with hashtext(session_id)): a deletion and a ledger write never interleave.
SESSION_LOCK = 7_402_003
# Every table holding a session's rows: a deletion empties them all, the ledger included.
SESSION_TABLES = (
    "events",
    "turns",
    "messages",
    "tool_calls",
    "approvals",
    "effects",
    "subagents",
    "tool_outputs",
    "sessions",
)

_TYPES = {
    "events": "uuid text int8 text text text int4 uuid text timestamptz int4 jsonb text int4 int8 text",
    "sessions": "text text text text jsonb text int4 int4 int8 int8 int8 int8 numeric int8 timestamptz"
    " timestamptz text int4 int8 int4 timestamptz text text int4 text int8 bool int4",
    "turns": "text text text text text jsonb int4 text text int8 int8 int8 int8 numeric timestamptz"
    " timestamptz timestamptz bool",
    "messages": "uuid text text text int8 int4 text jsonb text text int8 int8 int8 int8 numeric timestamptz",
    "tool_calls": "text text text text int4 text jsonb text jsonb bool timestamptz timestamptz int4",
}
TOOL_CALL_COLUMNS = (
    "tool_use_id",
    "session_id",
    "tenant_id",
    "turn_id",
    "step",
    "name",
    "input",
    "status",
    "result",
    "is_error",
    "requested_at",
    "completed_at",
    "duration_ms",
)
_RESULT_AT = TOOL_CALL_COLUMNS.index("status")


def _insert(table: str, columns: tuple[str, ...], conflict: str) -> bytes:
    """Many rows in one statement: a column's values as one array each."""
    arrays = ", ".join(f"%b::{t}[]" for t in _TYPES[table].split())
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) {conflict}".encode()


def _updates(columns: tuple[str, ...], kept: frozenset[str], merged: dict[str, str]) -> str:
    sets = [f"{c} = {merged.get(c, f'EXCLUDED.{c}')}" for c in columns if c not in kept]
    return ", ".join(sets)


INSERT_EVENTS = _insert("events", pj.EVENT_COLUMNS, "")
INSERT_MESSAGES = _insert("messages", pj.MESSAGE_COLUMNS, "")
INSERT_TOOL_CALLS = _insert(
    "tool_calls", TOOL_CALL_COLUMNS, "ON CONFLICT (session_id, tool_use_id) DO NOTHING"
)
# The first result of each call made before this batch (a later one changes nothing).
UPDATE_TOOL_CALLS = (
    b"UPDATE tool_calls t SET status = CASE WHEN u.is_error THEN 'error' ELSE 'ok' END, result = u.result,"
    b" is_error = u.is_error, completed_at = u.completed_at, duration_ms = u.duration_ms"
    b" FROM unnest(%b::text[], %b::text[], %b::jsonb[], %b::bool[], %b::timestamptz[], %b::int4[])"
    b" AS u(session_id, tool_use_id, result, is_error, completed_at, duration_ms)"
    b" WHERE t.session_id = u.session_id AND t.tool_use_id = u.tool_use_id AND t.completed_at IS NULL"
)
UPSERT_SESSIONS = _insert(
    "sessions",
    pj.SESSION_COLUMNS,
    "ON CONFLICT (session_id) DO UPDATE SET "
    + _updates(
        pj.SESSION_COLUMNS,
        pj.SESSION_KEPT,
        {"expired_at": "COALESCE(sessions.expired_at, EXCLUDED.expired_at)"},
    ),
)
UPSERT_TURNS = _insert(
    "turns",
    pj.TURN_COLUMNS,
    "ON CONFLICT (turn_id) DO UPDATE SET "
    + _updates(
        pj.TURN_COLUMNS, pj.TURN_KEPT, {"completed_at": "COALESCE(EXCLUDED.completed_at, turns.completed_at)"}
    ),
)


@dataclass
class Batch:
    """The rows of a batch's events: merged per session and turn, in log order otherwise."""

    events: list[pj.Row] = field(default_factory=list)
    # Per session: its latest state, when it expired, where a fork was cut.
    sessions: dict[str, tuple[SessionState, datetime | None, int | None]] = field(default_factory=dict)
    turns: dict[str, pj.Row] = field(default_factory=dict)
    messages: list[pj.Row] = field(default_factory=list)
    ops: list[tuple[Event, pj.Op]] = field(default_factory=list)
    deleted: list[Event] = field(default_factory=list)
    # Tool calls asked for in this batch (their first result merged in), and the first results
    # of calls asked for before it, by (session, tool_use_id).
    tool_calls: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    results: dict[tuple[str, str], pj.Row] = field(default_factory=dict)

    @classmethod
    def of(cls, rows: pj.Rows) -> Batch:
        """The rows of one event."""
        batch = cls()
        batch.add(rows)
        return batch

    def add(self, rows: pj.Rows) -> None:
        """One more event's rows."""
        sid = rows.event.session_id
        if rows.delete:
            self._forget(sid)
            self.deleted.append(rows.event)
            return
        self.events.append(rows.event_row)
        _, expired_at, forked_at_seq = self.sessions.get(sid, (None, None, None))
        self.sessions[sid] = (
            rows.after,
            expired_at or rows.expired_at,
            rows.forked_at_seq if forked_at_seq is None else forked_at_seq,
        )
        for turn in rows.turns:
            seen = self.turns.get(turn[0])
            self.turns[turn[0]] = turn if seen is None else pj.merge_turn(seen, turn)
        self.messages += rows.messages
        for op in rows.ops:
            self._op(rows.event, op)

    def _op(self, event: Event, op: pj.Op) -> None:
        """A tool call's rows are merged (asked and answered in one batch: one insert); any
        other operation is kept in log order."""
        if isinstance(op, pj.ToolOutcome) and op.is_error:
            self.ops.append((event, op))  # a sub-agent it ends, in order with their rows
        match op:
            case pj.ToolRequest():
                key = (event.session_id, op.tool_use_id)
                if key not in self.tool_calls:
                    self.tool_calls[key] = [
                        *(op.tool_use_id, event.session_id, event.tenant_id, op.turn_id, op.step, op.name),
                        *(Jsonb(op.input), "requested", None, None, event.occurred_at, None, None),
                    ]
            case pj.ToolOutcome():
                key = (event.session_id, op.tool_use_id)
                done = ("error" if op.is_error else "ok", Jsonb(op.content), op.is_error, event.occurred_at)
                asked = self.tool_calls.get(key)
                if asked is not None:
                    if asked[-2] is None:
                        asked[_RESULT_AT:] = [*done[:3], asked[_RESULT_AT + 3], done[3], op.duration_ms]
                elif key not in self.results:
                    self.results[key] = (*key, done[1], op.is_error, event.occurred_at, op.duration_ms)
            case _:
                self.ops.append((event, op))

    def _forget(self, sid: str) -> None:
        """Drop a deleted session's rows of this batch (Postgres's are deleted with it)."""
        self.events = [r for r in self.events if r[1] != sid]
        self.sessions.pop(sid, None)
        self.turns = {k: r for k, r in self.turns.items() if r[1] != sid}
        self.messages = [r for r in self.messages if r[1] != sid]
        self.ops = [(e, op) for e, op in self.ops if e.session_id != sid]
        self.tool_calls = {k: r for k, r in self.tool_calls.items() if k[0] != sid}
        self.results = {k: r for k, r in self.results.items() if k[0] != sid}


def _columns(rows: list[pj.Row] | list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def write(conn: Conn, batch: Batch) -> None:
    """Write a batch's rows (inside the caller's transaction)."""
    for event in batch.deleted:
        await delete_session(conn, event)
    if batch.events:
        await conn.execute(INSERT_EVENTS, _columns(batch.events))
    if batch.sessions:
        await conn.execute(UPSERT_SESSIONS, _columns([pj.session_row(*s) for s in batch.sessions.values()]))
    if batch.turns:
        await conn.execute(UPSERT_TURNS, _columns(list(batch.turns.values())))
    if batch.messages:
        await conn.execute(INSERT_MESSAGES, _columns(batch.messages))
    if batch.results:  # before the inserts: a result never answers a call asked for after it
        await conn.execute(UPDATE_TOOL_CALLS, _columns(list(batch.results.values())))
    if batch.tool_calls:
        await conn.execute(INSERT_TOOL_CALLS, _columns([tuple(r) for r in batch.tool_calls.values()]))
    if batch.ops:
        # Sent together; a pipeline of its own only where the caller has none (entering one
        # inside another syncs: a round trip).
        async with contextlib.nullcontext() if pipelined.active(conn) else conn.pipeline():
            for event, op in batch.ops:
                await _apply_op(conn, event, op)


async def delete_session(conn: Conn, event: Event) -> None:
    """Remove every row of a session, the ledger's too, destroy its data key and kept
    payloads (its records in the log can no longer be read), and keep a tombstone."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, event.session_id))
    for table in SESSION_TABLES:
        column = "parent_session_id" if table == "subagents" else "session_id"
        await conn.execute(f"DELETE FROM {table} WHERE {column} = %s".encode(), (event.session_id,))
    await vault.destroy_key(conn, event.session_id, event.tenant_id)
    await conn.execute(
        "INSERT INTO deleted_sessions (session_id, tenant_id, deleted_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (event.session_id, event.tenant_id, event.occurred_at),
    )


async def _apply_op(conn: Conn, event: Event, op: pj.Op) -> None:
    """One row operation of an event: rows that are not a session's state, each guarded by itself."""
    at = event.occurred_at
    match op:
        case pj.ToolOutcome():  # an error: the sub-agent answering the call is over
            await conn.execute(
                "UPDATE subagents SET status = 'timed_out', completed_at = %s"
                " WHERE parent_session_id = %s AND tool_use_id = %s AND status = 'running'",
                (at, event.session_id, op.tool_use_id),
            )
        case pj.ApprovalRequest():
            await conn.execute(
                "INSERT INTO approvals (approval_id, session_id, tenant_id, turn_id, step, tool_use_id, name,"
                " input, status, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s)"
                " ON CONFLICT (approval_id) DO NOTHING",
                (
                    op.approval_id,
                    event.session_id,
                    event.tenant_id,
                    event.turn_id,
                    event.step,
                    op.tool_use_id,
                    op.name,
                    Jsonb(op.input),
                    at,
                ),
            )
        case pj.ApprovalDecision():
            await conn.execute(
                "UPDATE approvals SET status = %s, reason = %s, decided_at = %s"
                " WHERE approval_id = %s AND status = 'pending'",
                ("approved" if op.approved else "denied", op.reason, at, op.approval_id),
            )
        case pj.ApprovalsClosed():
            await conn.execute(
                "UPDATE approvals SET status = 'expired', decided_at = %s"
                " WHERE turn_id = %s AND status = 'pending'",
                (at, op.turn_id),
            )
        case pj.SubagentStart(payload=p):
            # A newer attempt abandons the older ones (their late answers are ignored).
            await conn.execute(
                "UPDATE subagents SET status = 'abandoned' WHERE parent_session_id = %s"
                " AND tool_use_id = %s AND attempt < %s AND status = 'running'",
                (event.session_id, p.tool_use_id, p.attempt),
            )
            await conn.execute(
                "INSERT INTO subagents (parent_session_id, tool_use_id, attempt, child_session_id, tenant_id,"
                " turn_id, step, description, prompt, depth, status, requested_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s) ON CONFLICT DO NOTHING",
                (
                    event.session_id,
                    p.tool_use_id,
                    p.attempt,
                    p.child_session_id,
                    event.tenant_id,
                    event.turn_id,
                    event.step,
                    p.description,
                    p.prompt,
                    p.depth,
                    at,
                ),
            )
        case pj.SubagentEnd(payload=p):
            await conn.execute(
                "UPDATE subagents SET status = %s, result = %s, is_error = %s, completed_at = %s,"
                " duration_ms = %s WHERE parent_session_id = %s AND tool_use_id = %s AND attempt = %s"
                " AND status = 'running'",
                (
                    "failed" if p.is_error else "completed",
                    p.result,
                    p.is_error,
                    at,
                    p.duration_ms,
                    event.session_id,
                    p.tool_use_id,
                    p.attempt,
                ),
            )
