"""The api's outbox: what it acknowledged, kept in Postgres until the projection has it.

The embedded broker keeps its log in memory, and acks=all to one broker in memory is not
durability: a broker lost between an append's acknowledgement and the record's projection
would lose a turn the api had answered 202 (issue 17). So the api keeps every record it
appends in `api_outbox` (migration 0019), committed *before* the append, so that the row
exists before its record can be projected; the projector deletes the row in the transaction
that projects the record (`store.apply_batch`, by the record's event-id header); and a row
still there once the projector has read past every append that could have been in flight
when it looked belongs to a lost log: `Sweep` appends its record again, byte for byte
(sealed records stay sealed). Nothing here depends on knowing the log epoch.

A record appended twice (a sweep racing an append slower than `margin_s`) changes nothing:
every reader dedupes by event id (tests/faults/test_reproduced.py). What the margin buys is
fewer such copies, not correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from eventstore import log as kafka_log
from eventstore import roles
from eventstore.events import Event
from eventstore.log import Appended, KafkaLog, Record
from eventstore.settings import Settings
from eventstore.vault import Vault

log = logging.getLogger(__name__)

AsyncConn = psycopg.AsyncConnection[Any]

_KEEP = (
    "INSERT INTO api_outbox (event_id, tenant_id, session_id, record_key, record_value,"
    " header_names, header_values) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    # One event posted twice at once (the same Idempotency-Key): one row, two appends, one event.
    " ON CONFLICT (event_id) DO NOTHING"
)
# How many rows one sweep appends again at most (the next sweep takes the rest).
SWEEP_ROWS = 1000


def event_ids(headers_of: Iterable[Sequence[tuple[str, bytes]]]) -> list[uuid.UUID]:
    """The event ids in records' headers (a record without a valid one has none)."""
    found = []
    for headers in headers_of:
        for name, value in headers:
            if name == "event-id":
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    found.append(uuid.UUID(value.decode()))
                break
    return found


async def projected(conn: AsyncConn, ids: Sequence[uuid.UUID]) -> None:
    """Drop the rows of records now projected (in the projecting transaction)."""
    if ids:
        await conn.execute("DELETE FROM api_outbox WHERE event_id = ANY(%s)", (list(ids),))


class DurableLog:
    """The api's log: `KafkaLog.append`/`append_many`, each record kept in the outbox first.

    Rows are written as the events' tenant (row-level security checks it). An append that
    fails deletes its rows again, so a 503 leaves nothing to be appended later."""

    def __init__(self, kafka: KafkaLog, pool: Any) -> None:
        self.kafka = kafka
        self.pool = pool

    @property
    def vault(self) -> Vault:
        """The data keys and kept payloads its records are made with."""
        return self.kafka.vault

    async def append(self, event: Event) -> Appended:
        """Append one event; returns once it is kept and the broker acknowledged it."""
        return (await self.append_many([event]))[0]

    async def append_many(self, events: Sequence[Event]) -> list[Appended]:
        """Append events in order, each kept in the outbox first; all acknowledged."""
        records = await self.kafka.encode(events)
        kept = [(event, record) for event, record in zip(events, records, strict=True) if record is not None]
        await self._keep(kept)
        try:
            return await self.kafka.send(events, records)
        except Exception:
            with contextlib.suppress(Exception):
                await self._drop(kept)
            raise

    async def _keep(self, kept: Sequence[tuple[Event, Record]]) -> None:
        for tenant in {event.tenant_id for event, _ in kept}:
            rows = [
                (
                    event.event_id,
                    event.tenant_id,
                    event.session_id,
                    key,
                    value,
                    [name for name, _ in headers],
                    [v for _, v in headers],
                )
                for event, (key, value, headers) in kept
                if event.tenant_id == tenant
            ]
            async with self._as(tenant) as conn, conn.cursor() as cur:
                await cur.executemany(_KEEP, rows)

    async def _drop(self, kept: Sequence[tuple[Event, Record]]) -> None:
        for tenant in {event.tenant_id for event, _ in kept}:
            async with self._as(tenant) as conn:
                await projected(conn, [e.event_id for e, _ in kept if e.tenant_id == tenant])

    @contextlib.asynccontextmanager
    async def _as(self, tenant: str) -> Any:
        async with self.pool.connection() as conn, roles.acting_for(conn, tenant):
            yield conn


@dataclass(frozen=True)
class Due:
    """A sweep's question: rows kept before `cutoff`, once every partition in `ends` is read
    up to its end as of just after `cutoff`."""

    cutoff: datetime
    ends: dict[int, int]


class Sweep:
    """Appends again what the api kept and no projection took: the projector's, for the
    partitions it projects. Cheap while nothing is due: one indexed query per interval."""

    def __init__(self, settings: Settings, kafka: KafkaLog, partitions: int) -> None:
        self.settings = settings
        self.kafka = kafka
        self.partitions = partitions
        # An append the api started before the cutoff has been acknowledged, or failed, by then.
        self.margin_s = settings.kafka_append_timeout_s + 2.0
        self.appended_again = 0

    async def due(self, conn: AsyncConn, owned: Iterable[int]) -> Due | None:
        """What to wait for before sweeping, if any row of `owned` partitions is old enough."""
        cur = await conn.execute(
            "SELECT now() - make_interval(secs => %s),"
            " EXISTS (SELECT FROM api_outbox WHERE created_at < now() - make_interval(secs => %s))",
            (self.margin_s, self.margin_s),
        )
        row = await cur.fetchone()
        assert row is not None
        cutoff, any_due = row
        mine = sorted(owned)
        if not any_due or not mine:
            return None
        # Asked after the cutoff was taken: every append kept before it has landed below these.
        _, ends = await kafka_log.bounds(self.settings, mine)
        return Due(cutoff, ends)

    async def sweep(self, conn: AsyncConn, due: Due) -> int:
        """Append again the rows kept before `due.cutoff` in its partitions (call it once the
        projector read each of them up to `due.ends`); how many were appended."""
        records: list[Record] = []
        after = 0
        # Page by id: rows of partitions another projector replica sweeps must not fill the
        # page and starve this one's.
        while len(records) < SWEEP_ROWS:
            cur = await conn.execute(
                "SELECT id, session_id, record_key, record_value, header_names, header_values"
                " FROM api_outbox WHERE created_at < %s AND id > %s ORDER BY id LIMIT %s",
                (due.cutoff, after, SWEEP_ROWS),
            )
            page = await cur.fetchall()
            records += [
                (key, value, list(zip(names, values, strict=True)))
                for _, session, key, value, names, values in page
                if kafka_log.partition_for(session, self.partitions) in due.ends
            ]
            if len(page) < SWEEP_ROWS:
                break
            after = page[-1][0]
        records = records[:SWEEP_ROWS]
        if not records:
            return 0
        await self.kafka.append_records(records)
        self.appended_again += len(records)
        log.warning(
            "outbox: %d acknowledged record(s) were not in the log (a log lost before they were"
            " projected): appended again",
            len(records),
        )
        return len(records)

    async def run(self, owned: Callable[[], dict[int, int]], stop: asyncio.Event, every_s: float) -> None:
        """Sweep every `every_s` until `stop` (or cancelled). `owned()` is the projector's
        position in each partition it projects (the next offset it reads). A round that fails
        (Postgres or the log away) is logged and tried again the next time."""
        conn: AsyncConn | None = None
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
                if stop.is_set():
                    return
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            self.settings.database_url, autocommit=True
                        )
                    await self._round(conn, owned, every_s * 6)
                except Exception as exc:  # the next round tries again
                    log.warning(
                        "outbox sweep failed (%s: %s); again in %.0fs", type(exc).__name__, exc, every_s
                    )
                    if conn is not None:
                        await conn.close()
                    conn = None
        finally:
            if conn is not None:
                await conn.close()

    async def _round(self, conn: AsyncConn, owned: Callable[[], dict[int, int]], within_s: float) -> int:
        due = await self.due(conn, owned())
        if due is None:
            return 0
        deadline = asyncio.get_running_loop().time() + within_s
        while not all(owned().get(p, -1) >= end for p, end in due.ends.items()):
            if asyncio.get_running_loop().time() > deadline:
                return 0  # the projector is behind (or lost a partition): the next round asks again
            await asyncio.sleep(0.1)
        return await self.sweep(conn, due)
