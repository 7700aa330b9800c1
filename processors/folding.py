"""The loop shared by the reactor and the effect workers: read every partition, fold, act.

Each partition is read from where this worker or the projector left it, whichever is
earlier: a session's state before that point is loaded from Postgres when the session is
first seen (processors/sessions.py), so nothing replays the whole log. Only records at or
past the worker's stored offset are acted on. Offsets live in Postgres, per log epoch, and
never pass a record still being acted on. A log that no longer holds what was neither
acted on nor projected (retention deleted it) is a gap: counted, logged, never silent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from aiokafka import ConsumerRecord

from eventstore import codec, store
from eventstore.errors import AppendTimeout, DecodeError, LogError
from eventstore.events import Event
from eventstore.log import KafkaLog, PartitionReader
from eventstore.settings import Settings
from eventstore.state import SessionState
from observe.metrics import Metrics
from processors import failpoints
from processors.sessions import SessionCache

log = logging.getLogger(__name__)

# Failures of the log or the database: the worker stops (and is restarted) instead of
# dead-lettering an event that did nothing wrong.
UNAVAILABLE = (AppendTimeout, LogError, psycopg.OperationalError)


class FoldingWorker:
    """Base of the workers that keep session states; subclasses implement `act`."""

    consumer = "worker"

    def __init__(self, settings: Settings, kafka: KafkaLog, conn: store.AsyncConn, epoch: str) -> None:
        self.settings = settings
        self.kafka = kafka
        self.conn = conn
        self.epoch = epoch
        self.cache = SessionCache(
            conn,
            epoch,
            max_sessions=settings.session_cache_sessions,
            max_bytes=settings.session_cache_bytes,
            position=lambda partition: self.position.get(partition, 0),
        )
        self.reader = PartitionReader(settings)
        self.stored: dict[int, int] = {}
        self.position: dict[int, int] = {}
        self.start_offsets: dict[int, int] = {}  # where this run began reading each partition
        self.caught_up = False
        self.dead_letters = 0
        self._loads_counted = 0
        # Set by a task that failed in a way that must stop the worker (it is restarted).
        self.fatal: BaseException | None = None
        self.tick_s = 1.0
        # Replaced by the entry point with one that knows the instance (run_role).
        self.metrics = Metrics(settings.instance or self.consumer, self.consumer)

    def observe(self, event: Event) -> None:
        """Called for every decoded record, before folding, duplicates and replays included."""

    async def on_tick(self) -> None:
        """Called about every `tick_s` seconds once caught up (timers: expiry, deadlines)."""

    async def drain(self) -> None:
        """Finish work in flight before a clean stop."""

    async def close(self) -> None:
        """Release what the worker opened (called however `run` ends)."""

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        """Do what this worker does for a new event at or past the stored offset."""

    async def on_caught_up(self) -> None:
        """Called once, when every partition has been read to its end at start."""

    async def running_sessions(self) -> list[SessionState]:
        """States of the sessions the projection shows with unfinished turns, older epochs included."""
        cur = await self.conn.execute("SELECT session_id FROM sessions WHERE status = 'running'")
        return [await self.cache.get(row[0]) for row in await cur.fetchall() if self.reads(row[0])]

    def reads(self, session_id: str) -> bool:
        """Whether this worker reads the partition of the session's events."""
        return self.cache.partition(session_id) in self.position

    def committable(self, partition: int) -> int:
        """The offset below which everything of this partition is done."""
        return self.position.get(partition, 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Read, fold and act until `stop` is set."""
        partitions = await self.reader.start()
        try:
            self.cache.partitions = len(partitions)
            self.stored = await store.load_offsets(self.conn, self.consumer, self.epoch, codec.EVENTS_TOPIC)
            start = await self._start_positions([tp.partition for tp in partitions])
            ends = await self.reader.end_offsets()
            self.reader.seek(start)
            self.position = dict(start)
            self.start_offsets = dict(start)
            log.info(
                "%s: epoch %s, stored offsets %s, reading from %s, ends %s",
                self.consumer,
                self.epoch,
                self.stored,
                start,
                ends,
            )
            batches = self.reader.batches(max_records=500, timeout_ms=100)
            loop = asyncio.get_running_loop()
            next_tick = 0.0
            while not stop.is_set():
                if self.fatal is not None:
                    raise RuntimeError(f"{self.consumer} stopped: {self.fatal}") from self.fatal
                if self.caught_up and loop.time() >= next_tick:
                    next_tick = loop.time() + self.tick_s
                    await self.on_tick()
                records = await anext(batches)
                if records:
                    await self._handle(records)
                elif not self.caught_up and all(
                    self.position.get(tp.partition, 0) >= ends.get(tp.partition, 0) for tp in partitions
                ):
                    self.caught_up = True
                    await self.on_caught_up()
                else:
                    await self.cache.trim()  # the projector may have caught up since
                await self._save_offsets()
                self._measure_lag()
            await self.drain()
        finally:
            await self._save_offsets()
            await self.reader.stop()
            await self.close()

    async def _start_positions(self, partitions: list[int]) -> dict[int, int]:
        """Where to read each partition from (see `start_positions`), gaps counted and logged."""
        projected = await store.load_offsets(self.conn, "projector", self.epoch, codec.EVENTS_TOPIC)
        beginnings = await self.reader.beginning_offsets()
        start, lost = start_positions(partitions, self.stored, projected, beginnings)
        for p in partitions:
            self.metrics.log_gap.labels(self.consumer, str(p)).set(lost.get(p, 0))
            if lost.get(p):
                # Neither projected nor in the log any more: nothing can recover it.
                log.error(
                    "%s: partition %d starts at %d, but only %d was projected: %d record(s) are lost"
                    " (is the events topic's retention finite?)",
                    self.consumer,
                    p,
                    beginnings.get(p, 0),
                    projected.get(p, 0),
                    lost[p],
                )
        return start

    async def _handle(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            partition, offset = record.partition, record.offset
            if codec.is_marker(record.headers):
                self.position[partition] = offset + 1
                continue
            live = offset >= self.stored.get(partition, 0)
            try:
                event = codec.decode(record.value, record.headers)
            except DecodeError as exc:
                if live:
                    await self._dead_letter(record, f"undecodable: {exc}")
                self.position[partition] = offset + 1
                continue
            self.observe(event)
            state, new = await self.cache.apply(event, offset)
            if live and new:
                try:
                    await self.act(event, state, partition, offset)
                except UNAVAILABLE:
                    # Not the event's fault: stop before passing it, so a restart acts on it again.
                    raise
                except Exception as exc:  # a reaction that raises must not stop the partition
                    log.exception("%s: acting on %s failed", self.consumer, event.event_id)
                    await self._dead_letter(record, f"{type(exc).__name__}: {exc}")
            self.position[partition] = offset + 1
            failpoints.hit(f"{self.consumer}.after_record")

    def _measure_lag(self) -> None:
        self.metrics.cached_sessions.labels(self.consumer).set(len(self.cache.states))
        loads, self._loads_counted = self.cache.loads - self._loads_counted, self.cache.loads
        self.metrics.session_loads.labels(self.consumer).inc(loads)
        for partition, highwater in self.reader.highwaters().items():
            lag = max(0, highwater - self.position.get(partition, 0))
            self.metrics.consumer_lag.labels(self.consumer, str(partition)).set(lag)

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        self.dead_letters += 1
        self.metrics.dead_letters.labels(self.consumer).inc()
        incoming = store.Incoming(record.offset, record.key, record.value, record.headers, None, reason)
        await store.dead_letter(
            self.conn, self.consumer, self.epoch, record.topic, record.partition, incoming, reason
        )
        await self.kafka.append_raw(
            record.key,
            record.value,
            [*record.headers, ("dead-letter-reason", reason.encode()[:1000])],
            topic=codec.DEAD_LETTER_TOPIC,
        )
        log.warning("%s: dead letter at %s/%s: %s", self.consumer, record.partition, record.offset, reason)

    async def _save_offsets(self) -> None:
        for partition in list(self.position):
            done = self.committable(partition)
            if done > self.stored.get(partition, 0):
                await store.save_offset(
                    self.conn, self.consumer, self.epoch, codec.EVENTS_TOPIC, partition, done
                )
                self.stored[partition] = done


def start_positions(
    partitions: list[int], stored: dict[int, int], projected: dict[int, int], beginnings: dict[int, int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Where a folding worker reads each partition from, and how many records are lost.

    The earlier of its own stored offset (what it acted on) and the projector's (what
    Postgres holds): sessions' states before that are loaded from Postgres, and everything
    it has yet to act on is read again. Never before the log's beginning: what retention
    deleted below the projector's offset is in Postgres; what it deleted above is lost.
    """
    start: dict[int, int] = {}
    lost: dict[int, int] = {}
    for p in partitions:
        first = beginnings.get(p, 0)
        start[p] = max(min(stored.get(p, 0), projected.get(p, 0)), first)
        lost[p] = max(0, first - projected.get(p, 0))
    return start, lost
