"""Postgres: migrations, and applying projected rows with the consumer's offsets in one transaction.

The first copy of an event id wins (`INSERT ... ON CONFLICT DO NOTHING`); the offsets row is
locked and compared inside the same transaction, so records below a stored offset are never
applied twice, whoever else projects concurrently. A batch is pipelined; the SQL of each row
operation is in `rows`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from eventstore import admission, channels, codec, rows, vault
from eventstore import projection as pj
from eventstore.errors import DecodeError
from eventstore.events import Event, SessionDeleted

MIGRATION_LOCK = 7_402_001
PROJECTION_LOCK = 7_402_002
# Per session (with hashtext(session_id)): a deletion and a ledger write never interleave.
SESSION_LOCK = 7_402_003

# Emptied by a rebuild and projected again. Not `deleted_sessions`: a tombstone may be the only
# record of a deletion whose event was in an older log epoch (its session's rows, events
# included, are gone), and keeping every tombstone gives the same rows as replaying them.
DERIVED_TABLES = (
    "events",
    "sessions",
    "turns",
    "messages",
    "tool_calls",
    "approvals",
    "subagents",
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
    control: bool = False  # the log's identity marker: not an event, passed over


@dataclass(frozen=True)
class BatchResult:
    applied: int
    duplicates: int
    skipped: int
    dead: list[tuple[Incoming, str]]
    # Offsets of the dead letters this batch was the first consumer to refuse (published once).
    first_dead: frozenset[int] = frozenset()

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
) -> bool:
    """Keep a record that could not be handled, with its bytes and the reason: one row per
    record, naming every consumer that refused it. True if this consumer was the first."""
    headers = [[k, v.decode("utf-8", "replace")] for k, v in record.headers]
    cur = await conn.execute(
        "INSERT INTO dead_letters (consumer, consumers, log_epoch, topic, log_partition, log_offset,"
        " record_key, record_value, headers, reason) VALUES (%s,ARRAY[%s],%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (log_epoch, topic, log_partition, log_offset) DO UPDATE"
        " SET consumers = dead_letters.consumers || EXCLUDED.consumers"
        " WHERE NOT EXCLUDED.consumer = ANY(dead_letters.consumers)"
        " RETURNING xmax = 0",
        (
            consumer,
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
    row = await cur.fetchone()
    return bool(row and row[0])


# What a record that Postgres or the projection cannot store raises: that record is
# dead-lettered, the rest of its batch is kept.
UNSTORABLE = (psycopg.DataError, psycopg.IntegrityError, DecodeError, ValueError)


class _Mispredicted(Exception):
    """A pipelined batch's guess of an event's fate was wrong: the batch is applied again."""


@dataclass
class Foresight:
    """What a pipelined batch knows before its statements answer; checked before it commits.

    Only the projection writes `events`, `sessions` and tombstones, and a session's events are
    all in one partition, whose offsets row the batch's transaction holds: what is read here
    stays true while the batch runs. `verify` checks every guess against Postgres anyway.
    """

    deleted: set[str]
    known: set[uuid.UUID]
    last_seq: dict[str, int]
    guesses: list[tuple[psycopg.AsyncCursor[Any], int]] = field(default_factory=list)

    @classmethod
    async def read(cls, conn: AsyncConn, events: Sequence[Event]) -> Foresight:
        """The tombstones, the already projected ids and the sessions' last seqs of a batch."""
        sessions = list({e.session_id for e in events})
        # Sent together; in a pipeline their answers come back in one round trip.
        tombstones = await conn.execute(
            "SELECT session_id FROM deleted_sessions WHERE session_id = ANY(%s)", (sessions,)
        )
        projected = await conn.execute(
            "SELECT event_id FROM events WHERE event_id = ANY(%s)", ([e.event_id for e in events],)
        )
        seqs = await conn.execute(
            "SELECT session_id, last_seq FROM sessions WHERE session_id = ANY(%s)", (sessions,)
        )
        return cls(
            {r[0] for r in await tombstones.fetchall()},
            {r[0] for r in await projected.fetchall()},
            {r[0]: r[1] for r in await seqs.fetchall()},
        )

    async def verify(self) -> None:
        """Every event guessed new was inserted, at the seq guessed."""
        for cur, seq in self.guesses:
            row = await cur.fetchone()
            if row is None or row[0] != seq:
                raise _Mispredicted(f"guessed seq {seq}, Postgres says {row}")


async def apply_batch(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    records: Sequence[Incoming],
    on_event: Callable[[], None] | None = None,
) -> BatchResult:
    """Project one partition's batch and advance the offset, in one transaction.

    First pipelined: statements go out without waiting for answers, the duplicates and seqs
    foreseen in three queries and verified before the commit, no savepoint per event. If a
    record cannot be stored (or a guess was wrong), that transaction is rolled back and the
    batch is applied again one event at a time, each in a savepoint, so only the bad record
    is dead-lettered.
    """
    args = (conn, consumer, epoch, topic, partition, records, on_event)
    try:
        async with conn.pipeline(), conn.transaction():
            return await _apply_records(*args, pipelined=True)
    except (*UNSTORABLE, psycopg.errors.PipelineAborted, _Mispredicted):
        async with conn.transaction():
            return await _apply_records(*args, pipelined=False)


async def _apply_records(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    records: Sequence[Incoming],
    on_event: Callable[[], None] | None,
    *,
    pipelined: bool,
) -> BatchResult:
    """The body of apply_batch, inside its transaction."""
    applied = duplicates = skipped = 0
    dead: list[tuple[Incoming, str]] = []
    first_dead: set[int] = set()
    touched: set[str] = set()
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK,))
    await save_offset(conn, consumer, epoch, topic, partition, 0)
    cur = await conn.execute(
        "SELECT next_offset FROM consumer_offsets WHERE consumer = %s AND log_epoch = %s"
        " AND topic = %s AND log_partition = %s FOR UPDATE",
        (consumer, epoch, topic, partition),
    )
    # Read under the offsets row's lock (statements run in order), answered with it.
    # Asked before the foresight, whose answers bring these along in the same round trip.
    owners = await _owners(conn, [r.event for r in records if r.event])
    ahead = await Foresight.read(conn, [r.event for r in records if r.event]) if pipelined else None
    row = await cur.fetchone()
    stored = row[0] if row else 0
    next_offset = stored
    todo = [r for r in records if r.offset >= stored]
    skipped = len(records) - len(todo)
    for record in todo:
        next_offset = record.offset + 1
        if on_event is not None:
            on_event()
        if record.control:
            skipped += 1
            continue
        if record.event is None:
            reason = f"undecodable: {record.error}"
            if await dead_letter(conn, consumer, epoch, topic, partition, record, reason):
                first_dead.add(record.offset)
            dead.append((record, reason))
            continue
        # The projection never invents a session nor lets a tenant write into another's.
        refused = admission.owner_refusal(await owners.resolve(), record.event)
        if refused is not None:
            if await dead_letter(conn, consumer, epoch, topic, partition, record, refused):
                first_dead.add(record.offset)
            dead.append((record, refused))
            continue
        if ahead is not None:
            inserted = await project_event(conn, record.event, epoch, partition, record.offset, ahead)
        else:
            try:
                async with conn.transaction():
                    inserted = await project_event(conn, record.event, epoch, partition, record.offset)
            except UNSTORABLE as exc:
                reason = f"projection failed: {exc}"
                if await dead_letter(conn, consumer, epoch, topic, partition, record, reason):
                    first_dead.add(record.offset)
                dead.append((record, reason))
                continue
        admission.note_owner(await owners.resolve(), record.event)
        if inserted:
            applied += 1
            touched.add(record.event.session_id)
        else:
            duplicates += 1
    if ahead is not None:
        await ahead.verify()
    if touched:  # live views wake at the commit, when these rows are visible
        await channels.notify_projected(conn, touched)
    if next_offset > stored:
        await conn.execute(
            "UPDATE consumer_offsets SET next_offset = %s, updated_at = now()"
            " WHERE consumer = %s AND log_epoch = %s AND topic = %s AND log_partition = %s",
            (next_offset, consumer, epoch, topic, partition),
        )
    return BatchResult(applied, duplicates, skipped, dead, frozenset(first_dead))


@dataclass
class _Owners:
    """The tenant of each session of a batch as the projection holds it (None: deleted; absent:
    never started), asked for with the batch's first statements and read when first needed."""

    cursor: psycopg.AsyncCursor[Any]
    found: dict[str, str | None] | None = None

    async def resolve(self) -> dict[str, str | None]:
        if self.found is None:
            self.found = {sid: tenant for sid, tenant in await self.cursor.fetchall()}
        return self.found


async def _owners(conn: AsyncConn, events: Sequence[Event]) -> _Owners:
    sessions = list({e.session_id for e in events})
    cur = await conn.execute(
        "SELECT session_id, tenant_id FROM sessions WHERE session_id = ANY(%(s)s)"
        " UNION ALL SELECT session_id, NULL FROM deleted_sessions WHERE session_id = ANY(%(s)s)",
        {"s": sessions},
    )
    return _Owners(cur)


async def _delete_session(conn: AsyncConn, event: Event) -> None:
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


async def project_event(
    conn: AsyncConn,
    event: Event,
    epoch: str,
    partition: int,
    offset: int,
    ahead: Foresight | None = None,
) -> bool:
    """Insert the event and its derived rows; False if this event id was already projected
    (or its session was deleted). With `ahead`, nothing waits on Postgres to decide that."""
    if ahead is None:
        cur = await conn.execute("SELECT 1 FROM deleted_sessions WHERE session_id = %s", (event.session_id,))
        if await cur.fetchone() is not None:
            return False
    elif event.session_id in ahead.deleted or event.event_id in ahead.known:
        return False
    if isinstance(event, SessionDeleted):
        await _delete_session(conn, event)
        if ahead is not None:
            ahead.deleted.add(event.session_id)
        return True
    if ahead is None or event.session_id not in ahead.last_seq:
        await conn.execute(
            "INSERT INTO sessions (session_id, tenant_id, started_at, last_activity_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (session_id) DO NOTHING",
            (event.session_id, event.tenant_id, event.occurred_at, event.occurred_at),
        )
    payload = event.payload.model_dump(mode="json")
    cur = await conn.execute(
        "INSERT INTO events (event_id, session_id, seq, tenant_id, type, turn_id, step,"
        " causation_id, correlation_id, occurred_at, schema_version, payload,"
        " log_epoch, log_partition, log_offset, traceparent)"
        " SELECT %s, %s, s.last_seq + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
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
            event.traceparent,
            event.session_id,
        ),
    )
    if ahead is None:
        row = await cur.fetchone()
        if row is None:
            return False
        seq = row[0]
    else:
        # A new session's row starts at last_seq 0; the guess is verified before the commit.
        seq = ahead.last_seq.get(event.session_id, 0) + 1
        ahead.last_seq[event.session_id] = seq
        ahead.known.add(event.event_id)
        ahead.guesses.append((cur, seq))
    delta = rows.SessionDelta()
    for op in pj.project(event).ops:
        await rows.apply_op(conn, event, seq, op, delta)
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
            "traceparent",
        )
    }
    raw["event_id"] = str(raw["event_id"])
    raw["causation_id"] = str(raw["causation_id"]) if raw["causation_id"] else None
    raw["occurred_at"] = raw["occurred_at"].isoformat()
    return codec.from_dict(json.loads(json.dumps(raw)))


async def session_events(
    conn: AsyncConn, session_id: str, *, epoch: str | None = None, before: int | None = None
) -> list[Event]:
    """A session's projected events in session order; with `epoch`, those of other log epochs
    and those of `epoch` below offset `before` (none of it, without `before`)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM events WHERE session_id = %(sid)s AND (%(epoch)s::text IS NULL"
            " OR log_epoch <> %(epoch)s OR log_offset < %(before)s::bigint) ORDER BY seq",
            {"sid": session_id, "epoch": epoch, "before": before},
        )
        return [event_from_row(r) for r in await cur.fetchall()]
