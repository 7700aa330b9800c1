"""Postgres: migrations, and applying projected rows with the consumer's offsets in one transaction.

The first copy of an event id wins (`INSERT ... ON CONFLICT DO NOTHING`); the offsets row is
locked and compared inside the same transaction, so records below a stored offset are never
applied twice, whoever else projects concurrently. A batch is pipelined; the SQL of each row
operation is in `rows`.
"""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from eventstore import channels, codec, outbox, pipelined, rows
from eventstore import projection as pj
from eventstore.errors import DecodeError
from eventstore.events import SCHEMA_VERSION, Event
from eventstore.rows import SESSION_LOCK as SESSION_LOCK
from eventstore.state import SessionState, empty, evolve, fold

MIGRATION_LOCK = 7_402_001
PROJECTION_LOCK = 7_402_002

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

# The projector's folded sessions, by id: kept across its batches (checked against Postgres
# at each: a state whose count of events is not the session's `last_seq` is loaded again).
States = dict[str, SessionState]


@dataclass
class _Pass:
    """One pass over a batch inside its transaction: what Postgres holds of the batch's sessions
    (tombstones, projected ids, each session's folded state) and the states folded since.

    Only the projection writes `events`, `sessions` and tombstones, and a session's events are
    all in one partition, whose offsets row the batch's transaction holds: what is read here
    stays true while the batch runs.
    """

    deleted: set[str]
    known: set[uuid.UUID]
    states: States

    @classmethod
    async def read(cls, conn: AsyncConn, events: Sequence[Event], cache: States) -> _Pass:
        """Read what the batch's events need; states are taken from `cache` where it is current."""
        sessions = list({e.session_id for e in events})
        tombstones = await conn.execute(
            "SELECT session_id FROM deleted_sessions WHERE session_id = ANY(%s)", (sessions,)
        )
        projected = await conn.execute(
            "SELECT event_id FROM events WHERE event_id = ANY(%s)", ([e.event_id for e in events],)
        )
        seqs = await conn.execute(
            "SELECT session_id, last_seq FROM sessions WHERE session_id = ANY(%s)", (sessions,)
        )
        deleted = {r[0] for r in await tombstones.fetchall()}
        known = {r[0] for r in await projected.fetchall()}
        last_seq = {r[0]: r[1] for r in await seqs.fetchall()}
        states: States = {}
        stale = []
        for sid in sessions:
            cached = cache.get(sid)
            if cached is not None and cached.event_count == last_seq.get(sid, 0):
                states[sid] = cached
            elif sid in last_seq:
                stale.append(sid)
            else:
                states[sid] = empty(sid)
        for sid, history in (await histories(conn, stale)).items():
            states[sid] = fold(sid, history)
        return cls(deleted, known, states)

    def take(self, event: Event, where: tuple[str, int, int]) -> tuple[pj.Rows, SessionState] | str | None:
        """The rows of one event and its session's state after it; None for a copy (or an event
        of a deleted session), the reason when it is refused. The state moves on at `accept`."""
        if event.event_id in self.known or event.session_id in self.deleted:
            return None
        before = self.states[event.session_id]
        refused = pj.refusal(before, event)
        if refused is not None:
            return refused
        after = evolve(before, event)
        if after is before:
            return None
        return pj.project(before, event, after, where), after

    def accept(self, rows: pj.Rows, after: SessionState) -> None:
        """The event's rows are written: its session's state is `after`."""
        self.known.add(rows.event.event_id)
        self.states[rows.event.session_id] = after
        if rows.delete:
            self.deleted.add(rows.event.session_id)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """No cyclic garbage collection while a batch is made: its many short-lived objects, beside
    the folded states held, made collections ~40% of the projector's CPU (measured); what the
    batch leaves is collected after it (reference counting frees the rest as it goes)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def apply_batch(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    records: Sequence[Incoming],
    on_event: Callable[[], None] | None = None,
    states: States | None = None,
) -> BatchResult:
    """Project one partition's batch and advance the offset, in one transaction.

    The batch's sessions are folded and their rows gathered, then written in a few statements
    (`rows.write`). If a record cannot be stored, that transaction is rolled back and the
    batch is applied again one event at a time, each in a savepoint, so only the bad record is
    dead-lettered. `states` (the caller's, kept across batches) is brought up to date once
    the batch is written.
    """
    cache: States = {} if states is None else states
    args = (conn, consumer, epoch, topic, partition, records, on_event, cache)
    with _no_cycle_collection():
        try:
            # One pipeline: the offset and what the batch needs are read in one round trip,
            # the rows, announcements and offset written with the COMMIT in another.
            async with pipelined.transaction(conn):
                result, folded = await _apply_records(*args, bulk=True)
        except (*UNSTORABLE, psycopg.errors.PipelineAborted):
            async with conn.transaction():
                result, folded = await _apply_records(*args, bulk=False)
    for sid, state in folded.states.items():
        if sid in folded.deleted:
            cache.pop(sid, None)
        else:
            cache[sid] = state
    return result


async def _apply_records(
    conn: AsyncConn,
    consumer: str,
    epoch: str,
    topic: str,
    partition: int,
    records: Sequence[Incoming],
    on_event: Callable[[], None] | None,
    cache: States,
    *,
    bulk: bool,
) -> tuple[BatchResult, _Pass]:
    """The body of apply_batch, inside its transaction."""
    applied = duplicates = 0
    dead: list[tuple[Incoming, str]] = []
    first_dead: set[int] = set()
    touched: set[str] = set()
    finished: dict[str, str] = {}
    await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (PROJECTION_LOCK,))
    await save_offset(conn, consumer, epoch, topic, partition, 0)
    cur = await conn.execute(
        "SELECT next_offset FROM consumer_offsets WHERE consumer = %s AND log_epoch = %s"
        " AND topic = %s AND log_partition = %s FOR UPDATE",
        (consumer, epoch, topic, partition),
    )
    # Read with the offset (in a pipeline, together), for every record: those below it are
    # passed over, and reading theirs too costs nothing more.
    seen = await _Pass.read(conn, [r.event for r in records if r.event], cache)
    row = await cur.fetchone()
    stored = row[0] if row else 0
    next_offset = stored
    todo = [r for r in records if r.offset >= stored]
    skipped = len(records) - len(todo)
    batch = rows.Batch()
    for record in todo:
        next_offset = record.offset + 1
        if on_event is not None:
            on_event()
        if record.control:
            skipped += 1
            continue
        event = record.event
        if event is None:
            taken: tuple[pj.Rows, SessionState] | str | None = f"undecodable: {record.error}"
        else:
            taken = seen.take(event, (epoch, partition, record.offset))
        if isinstance(taken, str):  # undecodable, or refused
            if await dead_letter(conn, consumer, epoch, topic, partition, record, taken):
                first_dead.add(record.offset)
            dead.append((record, taken))
            continue
        if taken is None or event is None:
            duplicates += 1
            continue
        projected, after = taken
        if bulk:
            batch.add(projected)
        else:
            try:
                async with conn.transaction():
                    await rows.write(conn, rows.Batch.of(projected))
            except UNSTORABLE as exc:
                reason = f"projection failed: {exc}"
                if await dead_letter(conn, consumer, epoch, topic, partition, record, reason):
                    first_dead.add(record.offset)
                dead.append((record, reason))
                continue
        seen.accept(projected, after)
        applied += 1
        touched.add(event.session_id)
        finished.update(dict.fromkeys(pj.finished_turns(projected), event.session_id))
    if bulk:
        await rows.write(conn, batch)
    if touched:  # live views wake at the commit, when these rows are visible
        await channels.notify_projected(conn, touched)
    if finished:  # and what waits for a turn, when it finished
        await channels.notify_turns(conn, finished)
    # What the api kept until the projection had it (eventstore/outbox.py): every record of
    # the batch, projected, refused or a deleted session's, is had.
    await outbox.projected(conn, outbox.event_ids(r.headers for r in records))
    if next_offset > stored:
        await conn.execute(
            "UPDATE consumer_offsets SET next_offset = %s, updated_at = now()"
            " WHERE consumer = %s AND log_epoch = %s AND topic = %s AND log_partition = %s",
            (next_offset, consumer, epoch, topic, partition),
        )
    return BatchResult(applied, duplicates, skipped, dead, frozenset(first_dead)), seen


async def project_event(
    conn: AsyncConn,
    event: Event,
    epoch: str,
    partition: int,
    offset: int,
    states: States | None = None,
) -> bool:
    """Insert one event and its derived rows (inside the caller's transaction); False if it
    was already projected, its session was deleted, or it is refused (a session never started)."""
    seen = await _Pass.read(conn, [event], {} if states is None else states)
    taken = seen.take(event, (epoch, partition, offset))
    if taken is None or isinstance(taken, str):
        return False
    projected, after = taken
    await rows.write(conn, rows.Batch.of(projected))
    seen.accept(projected, after)
    if states is not None:
        states.update(seen.states)
        for sid in seen.deleted:
            states.pop(sid, None)
    return True


async def drop_derived(conn: AsyncConn) -> None:
    """Empty the derived tables and the projector's offsets (inside the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROJECTION_LOCK,))
    await conn.execute(("TRUNCATE " + ", ".join(DERIVED_TABLES)).encode())
    await conn.execute("DELETE FROM consumer_offsets WHERE consumer = 'projector'")


# An event's fields among its row's columns (the rest say where and when it was projected).
_ENVELOPE = tuple(c for c in pj.EVENT_COLUMNS if c != "seq" and not c.startswith("log_"))


def event_from_row(row: dict[str, Any]) -> Event:
    """An event from its row in `events`."""
    raw = {k: row[k] for k in _ENVELOPE}
    raw["event_id"] = str(raw["event_id"])
    raw["causation_id"] = str(raw["causation_id"]) if raw["causation_id"] else None
    raw["occurred_at"] = raw["occurred_at"].isoformat()
    return codec.from_dict(json.loads(json.dumps(raw)))


# An event's row as the JSON of the event, made by Postgres: parsed and validated in one pass
# by pydantic (a dict per row through psycopg, then through pydantic, was most of a load).
_EVENT_JSON = (
    "json_build_object('event_id', event_id, 'session_id', session_id, 'tenant_id', tenant_id,"
    " 'type', type, 'turn_id', turn_id, 'step', step, 'causation_id', causation_id,"
    " 'correlation_id', correlation_id, 'occurred_at', occurred_at, 'schema_version', schema_version,"
    " 'payload', payload, 'traceparent', traceparent)::text"
)


def _event_from_json(version: int, text: str) -> Event:
    """An event from the JSON `_EVENT_JSON` makes of its row; an older version is upcast."""
    event = codec.from_json(text) if version == SCHEMA_VERSION else None
    # Not an event of this version: upcast, or raise DecodeError saying why.
    return event if event is not None else codec.from_dict(json.loads(text))


async def histories(conn: AsyncConn, session_ids: Sequence[str]) -> dict[str, list[Event]]:
    """The projected events of these sessions, each session's in session order."""
    out: dict[str, list[Event]] = {sid: [] for sid in session_ids}
    if session_ids:
        cur = await conn.execute(
            f"SELECT session_id, schema_version, {_EVENT_JSON} FROM events"
            " WHERE session_id = ANY(%s) ORDER BY session_id, seq",
            (list(session_ids),),
        )
        for sid, version, text in await cur.fetchall():
            out[sid].append(_event_from_json(version, text))
    return out


async def session_events(
    conn: AsyncConn, session_id: str, *, epoch: str | None = None, before: int | None = None
) -> list[Event]:
    """A session's projected events in session order; with `epoch`, those of other log epochs
    and those of `epoch` below offset `before` (none of it, without `before`)."""
    cur = await conn.execute(
        f"SELECT schema_version, {_EVENT_JSON} FROM events WHERE session_id = %(sid)s"
        " AND (%(epoch)s::text IS NULL OR log_epoch <> %(epoch)s OR log_offset < %(before)s::bigint)"
        " ORDER BY seq",
        {"sid": session_id, "epoch": epoch, "before": before},
    )
    return [_event_from_json(version, text) for version, text in await cur.fetchall()]
