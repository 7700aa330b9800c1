"""Postgres: migrations, and applying projected rows with the consumer's offsets in one transaction.

The first copy of an event id wins (`INSERT ... ON CONFLICT DO NOTHING`); the offsets row is
locked and compared inside the same transaction, so records below a stored offset are never
applied twice, whoever else projects concurrently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from eventstore import codec, ids
from eventstore import projection as pj
from eventstore.errors import DecodeError
from eventstore.events import Event, SessionDeleted, Usage

MIGRATION_LOCK = 7_402_001
PROJECTION_LOCK = 7_402_002
# Per session (with hashtext(session_id)): a deletion and a ledger write never interleave.
SESSION_LOCK = 7_402_003

DERIVED_TABLES = (
    "events",
    "sessions",
    "turns",
    "messages",
    "tool_calls",
    "approvals",
    "subagents",
    "deleted_sessions",
)
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

AsyncConn = psycopg.AsyncConnection[Any]


async def connect(url: str) -> AsyncConn:
    """One autocommit connection; transactions are explicit."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def migration_files() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration, in order."""
    found = []
    for entry in resources.files("eventstore.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(url: str) -> list[str]:
    """Apply pending numbered migrations under an advisory lock; returns those applied."""
    applied: list[str] = []
    async with await connect(url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for number, name, sql in migration_files():
                if number in done:
                    continue
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (number, name)
                )
                applied.append(name)
    return applied


@dataclass(frozen=True)
class Incoming:
    """One record of a batch: decoded, or the reason it could not be."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    event: Event | None
    error: str | None = None


@dataclass(frozen=True)
class BatchResult:
    applied: int
    duplicates: int
    skipped: int
    dead: list[tuple[Incoming, str]]

    @property
    def dead_letters(self) -> int:
        return len(self.dead)


async def load_offsets(conn: AsyncConn, consumer: str, epoch: str, topic: str) -> dict[int, int]:
    """The stored next offsets of a consumer in this log epoch (other epochs never apply)."""
    cur = await conn.execute(
        "SELECT log_partition, next_offset FROM consumer_offsets"
        " WHERE consumer = %s AND log_epoch = %s AND topic = %s",
        (consumer, epoch, topic),
    )
    return {p: o for p, o in await cur.fetchall()}


async def save_offset(
    conn: AsyncConn, consumer: str, epoch: str, topic: str, partition: int, next_offset: int
) -> None:
    """Record a consumer's next offset; never moves it backwards."""
    await conn.execute(
        "INSERT INTO consumer_offsets (consumer, log_epoch, topic, log_partition, next_offset)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (consumer, log_epoch, topic, log_partition) DO UPDATE"
        " SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset),"
        " updated_at = now()",
        (consumer, epoch, topic, partition, next_offset),
    )


async def dead_letter(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    record: Incoming,
    reason: str,
) -> None:
    """Keep a record that could not be handled, with its bytes and the reason."""
    headers = [[k, v.decode("utf-8", "replace")] for k, v in record.headers]
    await conn.execute(
        "INSERT INTO dead_letters (consumer, log_epoch, topic, log_partition, log_offset,"
        " record_key, record_value, headers, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT DO NOTHING",
        (
            consumer,
            epoch,
            topic,
            partition,
            record.offset,
            record.key,
            record.value,
            Jsonb(headers),
            reason[:4000],
        ),
    )


async def apply_batch(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    records: Sequence[Incoming],
    on_event: Callable[[], None] | None = None,
) -> BatchResult:
    """Project one partition's batch and advance the offset, in one transaction."""
    applied = duplicates = skipped = 0
    dead: list[tuple[Incoming, str]] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK,))
        await save_offset(conn, consumer, epoch, topic, partition, 0)
        cur = await conn.execute(
            "SELECT next_offset FROM consumer_offsets WHERE consumer = %s AND log_epoch = %s"
            " AND topic = %s AND log_partition = %s FOR UPDATE",
            (consumer, epoch, topic, partition),
        )
        row = await cur.fetchone()
        stored = row[0] if row else 0
        next_offset = stored
        for record in records:
            if record.offset < stored:
                skipped += 1
                continue
            next_offset = record.offset + 1
            if on_event is not None:
                on_event()
            if record.event is None:
                reason = f"undecodable: {record.error}"
                await dead_letter(conn, consumer, epoch, topic, partition, record, reason)
                dead.append((record, reason))
                continue
            try:
                async with conn.transaction():
                    inserted = await project_event(conn, record.event, epoch, partition, record.offset)
            except (psycopg.DataError, psycopg.IntegrityError, DecodeError, ValueError) as exc:
                reason = f"projection failed: {exc}"
                await dead_letter(conn, consumer, epoch, topic, partition, record, reason)
                dead.append((record, reason))
                continue
            if inserted:
                applied += 1
            else:
                duplicates += 1
        if next_offset > stored:
            await conn.execute(
                "UPDATE consumer_offsets SET next_offset = %s, updated_at = now()"
                " WHERE consumer = %s AND log_epoch = %s AND topic = %s AND log_partition = %s",
                (next_offset, consumer, epoch, topic, partition),
            )
    return BatchResult(applied, duplicates, skipped, dead)


async def _delete_session(conn: AsyncConn, event: Event) -> None:
    """Remove every row of a session, the ledger's too, and keep a tombstone."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, event.session_id))
    for table in SESSION_TABLES:
        column = "parent_session_id" if table == "subagents" else "session_id"
        await conn.execute(f"DELETE FROM {table} WHERE {column} = %s".encode(), (event.session_id,))
    await conn.execute(
        "INSERT INTO deleted_sessions (session_id, tenant_id, deleted_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        (event.session_id, event.tenant_id, event.occurred_at),
    )


async def project_event(conn: AsyncConn, event: Event, epoch: str, partition: int, offset: int) -> bool:
    """Insert the event and its derived rows; False if this event id was already projected
    (or its session was deleted)."""
    cur = await conn.execute("SELECT 1 FROM deleted_sessions WHERE session_id = %s", (event.session_id,))
    if await cur.fetchone() is not None:
        return False
    if isinstance(event, SessionDeleted):
        await _delete_session(conn, event)
        return True
    await conn.execute(
        "INSERT INTO sessions (session_id, tenant_id, started_at, last_activity_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING",
        (event.session_id, event.tenant_id, event.occurred_at, event.occurred_at),
    )
    payload = event.payload.model_dump(mode="json")
    cur = await conn.execute(
        "INSERT INTO events (event_id, session_id, seq, tenant_id, type, turn_id, step,"
        " causation_id, correlation_id, occurred_at, schema_version, payload,"
        " log_epoch, log_partition, log_offset)"
        " SELECT %s, %s, s.last_seq + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
        " FROM sessions s WHERE s.session_id = %s"
        " ON CONFLICT (event_id) DO NOTHING RETURNING seq",
        (
            event.event_id,
            event.session_id,
            event.tenant_id,
            event.type,
            event.turn_id,
            event.step,
            event.causation_id,
            event.correlation_id,
            event.occurred_at,
            event.schema_version,
            Jsonb(payload),
            epoch,
            partition,
            offset,
            event.session_id,
        ),
    )
    row = await cur.fetchone()
    if row is None:
        return False
    seq = row[0]
    delta = _SessionDelta()
    for op in pj.project(event).ops:
        await _apply_op(conn, event, seq, op, delta)
    await conn.execute(
        "UPDATE sessions SET last_seq = %(seq)s,"
        " last_activity_at = GREATEST(last_activity_at, %(at)s),"
        " started_at = LEAST(started_at, %(at)s),"
        " pending_turns = pending_turns + %(pending)s, turn_count = turn_count + %(turns)s,"
        " input_tokens = input_tokens + %(inp)s, output_tokens = output_tokens + %(out)s,"
        " cache_read_tokens = cache_read_tokens + %(cr)s,"
        " cache_write_tokens = cache_write_tokens + %(cw)s, cost_usd = cost_usd + %(cost)s,"
        " expired_at = CASE WHEN %(expired)s AND pending_turns + %(pending)s = 0"
        "   THEN COALESCE(expired_at, %(at)s) ELSE expired_at END,"
        " status = CASE WHEN expired_at IS NOT NULL"
        "   OR (%(expired)s AND pending_turns + %(pending)s = 0) THEN 'expired'"
        "   WHEN pending_turns + %(pending)s > 0 THEN 'running' ELSE 'idle' END"
        " WHERE session_id = %(sid)s",
        {
            "seq": seq,
            "at": event.occurred_at,
            "pending": delta.pending,
            "turns": delta.turns,
            "inp": delta.usage.input_tokens,
            "out": delta.usage.output_tokens,
            "cr": delta.usage.cache_read_input_tokens,
            "cw": delta.usage.cache_creation_input_tokens,
            "cost": delta.cost,
            "expired": delta.expired,
            "sid": event.session_id,
        },
    )
    return True


@dataclass
class _SessionDelta:
    """What one event adds to its session's aggregate row."""

    pending: int = 0
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    expired: bool = False


async def _tool_results_message(conn: AsyncConn, event: Event, seq: int, results: list[Any]) -> None:
    """All tool results of a step, as the one user message the model is sent."""
    if results:
        await conn.execute(
            "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
            " content, created_at) VALUES (%s, %s, %s, %s, %s, 'user', %s, %s)",
            (
                event.event_id,
                event.session_id,
                event.tenant_id,
                event.turn_id,
                seq,
                Jsonb(results),
                event.occurred_at,
            ),
        )


async def _apply_op(conn: AsyncConn, event: Event, seq: int, op: pj.Op, d: _SessionDelta) -> None:
    at = event.occurred_at
    match op:
        case pj.SessionStart():
            await conn.execute(
                "UPDATE sessions SET model = %s, system_prompt = %s, metadata = %s, tenant_id = %s,"
                " policy = %s, max_steps = %s, token_budget = %s, ttl_s = %s, parent_session_id = %s,"
                " parent_tool_use_id = %s, depth = %s, forked_from = %s, forked_at_seq = %s, ephemeral = %s"
                " WHERE session_id = %s",
                (
                    op.model,
                    op.system,
                    Jsonb(op.metadata),
                    event.tenant_id,
                    op.policy,
                    op.max_steps,
                    op.token_budget,
                    op.ttl_s,
                    op.parent_session_id,
                    op.parent_tool_use_id,
                    op.depth,
                    op.forked_from,
                    op.forked_at_seq,
                    op.ephemeral,
                    event.session_id,
                ),
            )
            for ord_, message in enumerate(op.history):
                await conn.execute(
                    "INSERT INTO messages (message_id, session_id, tenant_id, seq, ord, role, content,"
                    " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        ids.derive(ids.event_key(event.session_id, "history", ord_)),
                        event.session_id,
                        event.tenant_id,
                        seq,
                        ord_,
                        message["role"],
                        Jsonb(message["content"]),
                        at,
                    ),
                )
        case pj.TurnRequest():
            cur = await conn.execute(
                "INSERT INTO turns (turn_id, session_id, tenant_id, status, idempotency_key,"
                " user_content, requested_at) VALUES (%s, %s, %s, 'queued', %s, %s, %s)"
                " ON CONFLICT (turn_id) DO NOTHING RETURNING 1",
                (op.turn_id, event.session_id, event.tenant_id, op.idempotency_key, Jsonb(op.content), at),
            )
            if await cur.fetchone():
                d.pending += 1
                await conn.execute(
                    "UPDATE turns t SET interrupted = true FROM sessions s"
                    " WHERE s.session_id = t.session_id AND s.policy = 'interrupt'"
                    " AND t.session_id = %s AND t.status = 'running'",
                    (event.session_id,),
                )
        case pj.TurnStart():
            cur = await conn.execute(
                "UPDATE turns SET status = 'running', started_at = %s"
                " WHERE turn_id = %s AND status = 'queued' RETURNING user_content",
                (at, op.turn_id),
            )
            row = await cur.fetchone()
            if row is not None:
                d.turns += 1
                await conn.execute(
                    "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
                    " content, created_at) VALUES (%s, %s, %s, %s, %s, 'user', %s, %s)",
                    (event.event_id, event.session_id, event.tenant_id, op.turn_id, seq, Jsonb(row[0]), at),
                )
        case pj.ModelStep():
            cur = await conn.execute(
                "UPDATE turns SET steps = GREATEST(steps, %s) WHERE turn_id = %s AND status = 'running'"
                " RETURNING 1",
                (op.step, op.turn_id),
            )
            if await cur.fetchone():
                await _tool_results_message(conn, event, seq, op.tool_results)
        case pj.AssistantReply():
            u = op.usage
            # Only an answer the turn still waits for joins the transcript; a late one is billed.
            await conn.execute(
                "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
                " content, model, stop_reason, input_tokens, output_tokens, cache_read_tokens,"
                " cache_write_tokens, cost_usd, created_at)"
                " SELECT %s, %s, %s, %s, %s, 'assistant', %s, %s, %s, %s, %s, %s, %s, %s, %s"
                " WHERE EXISTS (SELECT 1 FROM turns WHERE turn_id = %s AND status = 'running'"
                " AND NOT interrupted)",
                (
                    event.event_id,
                    event.session_id,
                    event.tenant_id,
                    op.turn_id,
                    seq,
                    Jsonb(op.content),
                    op.model,
                    op.stop_reason,
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_input_tokens,
                    u.cache_creation_input_tokens,
                    op.cost_usd,
                    at,
                    op.turn_id,
                ),
            )
            await conn.execute(
                "UPDATE turns SET input_tokens = input_tokens + %s,"
                " output_tokens = output_tokens + %s, cache_read_tokens = cache_read_tokens + %s,"
                " cache_write_tokens = cache_write_tokens + %s, cost_usd = cost_usd + %s"
                " WHERE turn_id = %s",
                (
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_input_tokens,
                    u.cache_creation_input_tokens,
                    op.cost_usd,
                    op.turn_id,
                ),
            )
            d.usage = d.usage + u
            d.cost += op.cost_usd
        case pj.ToolRequest():
            await conn.execute(
                "INSERT INTO tool_calls (tool_use_id, session_id, tenant_id, turn_id, step, name,"
                " input, status, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'requested', %s)"
                " ON CONFLICT (session_id, tool_use_id) DO NOTHING",
                (
                    op.tool_use_id,
                    event.session_id,
                    event.tenant_id,
                    op.turn_id,
                    op.step,
                    op.name,
                    Jsonb(op.input),
                    at,
                ),
            )
        case pj.ToolOutcome() if op.is_error:
            # A Task call answered with an error before its sub-agent finished (timeouts spent).
            await conn.execute(
                "UPDATE subagents SET status = 'timed_out', completed_at = %s WHERE parent_session_id = %s"
                " AND tool_use_id = %s AND status = 'running'",
                (at, event.session_id, op.tool_use_id),
            )
            await _tool_outcome(conn, event, op)
        case pj.ToolOutcome():
            await _tool_outcome(conn, event, op)
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
        case pj.TurnEnd():
            cur = await conn.execute(
                "UPDATE turns SET status = %s, stop_reason = %s, error = %s, completed_at = %s"
                " WHERE turn_id = %s AND status IN ('queued', 'running') RETURNING 1",
                (op.status, op.stop_reason, op.error, at, op.turn_id),
            )
            if await cur.fetchone():
                d.pending -= 1
                await _tool_results_message(conn, event, seq, op.tool_results)
                # Approvals the turn no longer waits for are closed with it.
                await conn.execute(
                    "UPDATE approvals SET status = 'expired', decided_at = %s"
                    " WHERE turn_id = %s AND status = 'pending'",
                    (at, op.turn_id),
                )
        case pj.SessionExpire():
            d.expired = True
        case pj.SessionDelete():
            pass  # handled before any row is written


async def _tool_outcome(conn: AsyncConn, event: Event, op: pj.ToolOutcome) -> None:
    await conn.execute(
        "UPDATE tool_calls SET status = CASE WHEN %s THEN 'error' ELSE 'ok' END,"
        " result = %s, is_error = %s, completed_at = %s, duration_ms = %s"
        " WHERE session_id = %s AND tool_use_id = %s AND completed_at IS NULL",
        (
            op.is_error,
            Jsonb(op.content),
            op.is_error,
            event.occurred_at,
            op.duration_ms,
            event.session_id,
            op.tool_use_id,
        ),
    )


async def drop_derived(conn: AsyncConn) -> None:
    """Empty the derived tables and the projector's offsets (inside the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
    await conn.execute(("TRUNCATE " + ", ".join(DERIVED_TABLES)).encode())
    await conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'projector'")


def event_from_row(row: dict[str, Any]) -> Event:
    """An event from its row in `events`."""
    raw = {
        k: row[k]
        for k in (
            "event_id",
            "session_id",
            "tenant_id",
            "type",
            "turn_id",
            "step",
            "causation_id",
            "correlation_id",
            "occurred_at",
            "schema_version",
            "payload",
        )
    }
    raw["event_id"] = str(raw["event_id"])
    raw["causation_id"] = str(raw["causation_id"]) if raw["causation_id"] else None
    raw["occurred_at"] = raw["occurred_at"].isoformat()
    return codec.from_dict(json.loads(json.dumps(raw)))


async def session_events(
    conn: AsyncConn, session_id: str, *, exclude_epoch: str | None = None
) -> list[Event]:
    """A session's projected events in session order (optionally those of older log epochs only)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM events WHERE session_id = %s"
            " AND (%s::text IS NULL OR log_epoch <> %s) ORDER BY seq",
            (session_id, exclude_epoch, exclude_epoch),
        )
        return [event_from_row(r) for r in await cur.fetchall()]
