"""The loop shared by the reactor and the effect workers: fold the partitions this replica
owns, act on what is new.

Partitions come from the role's consumer group (`groups.GroupConsumer`, any number of
replicas) or, for the one process that owns the whole log, all of them by hand
(`groups.ManualConsumer`). On assignment a replica claims its partitions (`owners.Fence`:
a replica that lost one can no longer save an offset or record an effect for it) and reads
each from where it or the projector left it, whichever is earlier: a session's state before
that point is loaded from Postgres when the session is first seen (processors/sessions.py),
so nothing replays the whole log. Only records at or past the stored offset are acted on.
Offsets live in Postgres, per log epoch, and never pass a record still being acted on. A
log that no longer holds what was neither acted on nor projected (retention deleted it) is
a gap: counted, logged, never silent. On revocation the replica finishes (or gives up) the
work of those partitions, saves their offsets and forgets their sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import psycopg

from eventstore import admission, codec, store
from eventstore import log as kafka_log
from eventstore.errors import AppendTimeout, DecodeError, LogError, Shredded
from eventstore.events import Event
from eventstore.log import KafkaLog
from eventstore.owners import Fence, Fenced
from eventstore.settings import Settings
from eventstore.state import SessionState
from observe.metrics import Metrics
from processors import failpoints
from processors.groups import Delivery, GroupConsumer, ManualConsumer, Record
from processors.sessions import SessionCache

log = logging.getLogger(__name__)

# Failures of the log or the database, or a lost partition: the worker stops (and is
# restarted) instead of dead-lettering an event that did nothing wrong.
UNAVAILABLE = (AppendTimeout, LogError, psycopg.OperationalError, Fenced)


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
        self.delivery: Delivery | None = None
        self.fence: Fence | None = None
        self.stored: dict[int, int] = {}
        self.position: dict[int, int] = {}
        self.start_offsets: dict[int, int] = {}  # where this run began reading each partition
        # Partitions owned and not yet read to the end they had when assigned, with that end.
        self.catching_up: dict[int, int] = {}
        # Partitions read to that end whose `on_caught_up` is still to run.
        self.newly_live: set[int] = set()
        self.assigned_once = False
        # Records lost per owned partition: neither in the log nor projected (readiness false).
        self.gaps: dict[int, int] = {}
        self.dead_letters = 0
        self._loads_counted = 0
        # Held while records are folded and while hooks run: they see one state at a time.
        self.busy = asyncio.Lock()
        # Set by a task that failed in a way that must stop the worker (it is restarted).
        self.fatal: BaseException | None = None
        self.tick_s = 1.0
        self.last_records = time.monotonic()
        # Replaced by the entry point with one that knows the instance (run_role).
        self.metrics = Metrics(settings.instance or self.consumer, self.consumer)

    # What a subclass may define.

    def observe(self, event: Event) -> None:
        """Called for every decoded record, before folding, duplicates and replays included."""

    async def on_tick(self) -> None:
        """Called about every `tick_s` seconds (timers: expiry, deadlines)."""

    async def release(self, partitions: set[int]) -> None:
        """Finish or give up the work in flight for partitions being handed back."""

    async def close(self) -> None:
        """Release what the worker opened (called however `run` ends)."""

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        """Do what this worker does for a new event at or past the stored offset."""

    async def on_caught_up(self, partitions: set[int]) -> None:
        """Called when newly owned partitions have been read to the end they had when assigned."""

    def forget(self, partitions: set[int]) -> None:
        """Drop what is kept per partition once the partitions' offsets are saved on revocation."""

    async def flush(self) -> None:
        """Called after each batch of records is acted on, before its positions can be saved:
        wait for what `act` left in flight (the reactor's appends). If that fails, it rewinds
        (see `rewind`) and raises; the worker stops."""

    def rewind(self) -> None:
        """Give up what `act` left in flight: each partition's position goes back to the first
        record whose work is not confirmed, so a restart acts on it again."""

    # Ownership.

    @property
    def owned(self) -> set[int]:
        """The partitions this replica owns now."""
        return set(self.position)

    @property
    def caught_up(self) -> bool:
        """Whether every owned partition was read to the end it had when assigned."""
        return self.assigned_once and not self.catching_up and not self.newly_live

    def live(self, partition: int) -> bool:
        """Whether a partition is owned and caught up (its requests can be decided now)."""
        return partition in self.position and partition not in self.catching_up

    async def running_sessions(self, partitions: set[int] | None = None) -> list[SessionState]:
        """States of the sessions the projection shows with unfinished turns, older epochs
        included, of the given partitions (default: every partition owned)."""
        wanted = self.owned if partitions is None else partitions
        cur = await self.conn.execute("SELECT session_id FROM sessions WHERE status = 'running'")
        ids = [row[0] for row in await cur.fetchall()]
        return [await self.cache.get(sid) for sid in ids if self.cache.partition(sid) in wanted]

    def reads(self, session_id: str) -> bool:
        """Whether this replica owns the partition of the session's events."""
        return self.cache.partition(session_id) in self.position

    def committable(self, partition: int) -> int:
        """The offset below which everything of this partition is done."""
        return self.position.get(partition, 0)

    # The loop.

    def consumer_for(self, settings: Settings) -> Delivery:
        """This role's group membership, or every partition by hand without groups."""
        common = {
            "on_assigned": self._assigned,
            "on_revoked": self._revoked,
            "on_records": self._records,
            "on_error": self._failed,
            "batch": 256,
        }
        if settings.consumer_groups:
            return GroupConsumer(settings, f"agentlog.{self.consumer}", batch_window_s=0.005, **common)  # type: ignore[arg-type]
        return ManualConsumer(settings, self.consumer, **common)  # type: ignore[arg-type]

    async def run(self, stop: asyncio.Event) -> None:
        """Fold and act on the partitions this replica is given until `stop` is set."""
        count = await kafka_log.partition_count(self.settings)
        self.cache.partitions = count
        self.fence = Fence(self.consumer, self.epoch, self.metrics.instance, count)
        self.delivery = self.consumer_for(self.settings)
        ticker = asyncio.create_task(self._ticks(stop))
        try:
            await self.delivery.run(stop)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.close()
        if self.fatal is not None:
            raise RuntimeError(f"{self.consumer} stopped: {self.fatal}") from self.fatal

    @property
    def quiet(self) -> bool:
        """No record for as long as a consumer takes to call itself idle (`log.FetchPace`)."""
        return time.monotonic() - self.last_records >= kafka_log.FetchPace.IDLE_AFTER_S

    def stop_with(self, exc: BaseException) -> None:
        """Stop the worker because of `exc` (it is restarted and resumes from its offsets)."""
        if self.fatal is None:
            self.fatal = exc
        if self.delivery is not None:
            self.delivery.fail(exc)

    async def _ticks(self, stop: asyncio.Event) -> None:
        """Catch-up hooks, timers, offsets and metrics, beside the records."""
        loop = asyncio.get_running_loop()
        next_tick = 0.0
        while not stop.is_set():
            # Every 50 ms while records flow; a quiet worker wakes five times less often.
            await asyncio.sleep(0.25 if self.quiet else 0.05)
            try:
                if self.fatal is not None:
                    self.stop_with(self.fatal)
                    return
                async with self.busy:
                    if self.newly_live:
                        live, self.newly_live = self.newly_live, set()
                        await self.on_caught_up(live & self.owned)
                        failpoints.hit(f"{self.consumer}.after_caught_up")
                    if self.caught_up and loop.time() >= next_tick:
                        next_tick = loop.time() + self.tick_s
                        await self.on_tick()
                    await self.cache.trim()  # the projector may have caught up since
                    await self._save_offsets()
                self._measure_lag()
            except Exception as exc:
                log.exception("%s: stopping", self.consumer)
                self.stop_with(exc)
                return

    async def _assigned(self, partitions: set[int]) -> dict[int, int]:
        """Claim the partitions, then say where each starts (see `start_positions`)."""
        assert self.fence is not None
        async with self.busy:
            await self.fence.claim(self.conn, partitions)
            stored = await store.load_offsets(self.conn, self.consumer, self.epoch, codec.EVENTS_TOPIC)
            projected = await store.load_offsets(self.conn, "projector", self.epoch, codec.EVENTS_TOPIC)
            beginnings, ends = await kafka_log.bounds(self.settings, sorted(partitions))
            start, lost = start_positions(sorted(partitions), stored, projected, beginnings)
            for p in partitions:
                self.stored[p] = stored.get(p, 0)
                self.position[p] = start[p]
                self.start_offsets[p] = start[p]
                self._report_gap(p, lost.get(p, 0), beginnings.get(p, 0), projected.get(p, 0))
                if start[p] < ends.get(p, 0):
                    self.catching_up[p] = ends[p]
                else:
                    self.newly_live.add(p)
            self.assigned_once = True
            log.info(
                "%s: epoch %s, assigned %s, stored %s, reading from %s, ends %s",
                self.consumer,
                self.epoch,
                sorted(partitions),
                {p: stored.get(p, 0) for p in partitions},
                start,
                {p: ends.get(p, 0) for p in partitions},
            )
            return start

    def ready(self) -> bool:
        """What /readyz says beside the process being alive: false while a partition this
        replica owns has a gap (records the log lost before they were projected)."""
        return not any(self.gaps.values())

    def _report_gap(self, partition: int, lost: int, first: int, projected: int) -> None:
        self.metrics.log_gap.labels(self.consumer, str(partition)).set(lost)
        self.gaps[partition] = lost
        if lost:
            # Neither projected nor in the log any more: nothing can recover it.
            log.error(
                "%s: partition %d starts at %d, but only %d was projected: %d record(s) are lost"
                " (is the events topic's retention finite?)",
                self.consumer,
                partition,
                first,
                projected,
                lost,
            )

    async def _revoked(self, partitions: set[int]) -> None:
        """Finish the partitions' work, save their offsets, forget their sessions."""
        await self.release(partitions)
        async with self.busy:
            try:
                await self._save_offsets(partitions)
            except Fenced as exc:
                log.warning("%s: %s", self.consumer, exc)  # another replica has them already
            for p in partitions:
                self.position.pop(p, None)
                self.stored.pop(p, None)
                self.catching_up.pop(p, None)
                self.newly_live.discard(p)
                self.gaps.pop(p, None)
                self.metrics.consumer_lag.labels(self.consumer, str(p)).set(0)
            self.cache.forget(partitions)
            self.forget(partitions)
            if self.fence is not None:
                self.fence.release(partitions)
            log.info("%s: revoked %s", self.consumer, sorted(partitions))

    async def _records(self, partition: int, records: Sequence[Record]) -> None:
        """Fold and act on one partition's records; never raises (a batch is not all-or-nothing
        here): a bad record is dead-lettered, an unavailable dependency stops the worker."""
        self.last_records = time.monotonic()
        async with self.busy:
            try:
                await self.kafka.records.prefetch(records)
            except UNAVAILABLE as exc:
                log.error("%s: stopping at %s: %r", self.consumer, partition, exc)
                self.stop_with(exc)
                return
            for record in records:
                if self.fatal is not None or partition not in self.position:
                    self.rewind()
                    return
                try:
                    await self._handle(record)
                except UNAVAILABLE as exc:
                    # Not the event's fault: stop before passing it, so a restart acts on it again.
                    log.error("%s: stopping at %s/%s: %r", self.consumer, partition, record.offset, exc)
                    self.rewind()
                    self.stop_with(exc)
                    return
            try:
                await self.flush()
            except UNAVAILABLE as exc:
                log.error("%s: stopping after %s/%s: %r", self.consumer, partition, records[-1].offset, exc)
                self.stop_with(exc)
                return
            end = self.catching_up.get(partition)
            if end is not None and self.position.get(partition, 0) >= end:
                del self.catching_up[partition]
                self.newly_live.add(partition)

    async def _failed(self, record: Record, exc: Exception) -> None:
        """`_records` never raises: whatever reaches here stops the worker."""
        raise exc

    async def _handle(self, record: Record) -> None:
        partition, offset = record.partition, record.offset
        if codec.is_marker(record.headers):
            self.position[partition] = offset + 1
            return
        live = offset >= self.stored.get(partition, 0)
        try:
            event = await self.kafka.records.decode(record.key, record.value, record.headers)
        except Shredded:
            # Its session was deleted: nobody can read it, and nobody is to blame.
            self.metrics.shredded.labels(self.consumer).inc()
            self.position[partition] = offset + 1
            return
        except DecodeError as exc:
            if live:
                await self._dead_letter(record, f"undecodable: {exc}")
            self.position[partition] = offset + 1
            return
        self.observe(event)
        refused = admission.refusal(await self.cache.get(event.session_id, before=offset), event)
        if refused is not None:
            if live:
                await self._dead_letter(record, refused)
            self.position[partition] = offset + 1
            return
        state, new = await self.cache.apply(event, offset)
        if live and new:
            try:
                await self.act(event, state, partition, offset)
            except UNAVAILABLE:
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
        if self.delivery is None:
            return
        for partition, highwater in self.delivery.highwaters().items():
            if partition in self.position:
                lag = max(0, highwater - self.position[partition])
                self.metrics.consumer_lag.labels(self.consumer, str(partition)).set(lag)

    async def _dead_letter(self, record: Record, reason: str) -> None:
        self.dead_letters += 1
        self.metrics.dead_letters.labels(self.consumer).inc()
        incoming = store.Incoming(record.offset, record.key, record.value, list(record.headers), None, reason)
        first = await store.dead_letter(
            self.conn, self.consumer, self.epoch, codec.EVENTS_TOPIC, record.partition, incoming, reason
        )
        if first:  # one copy on the dead-letter topic, however many consumers refuse the record
            await self.kafka.append_raw(
                record.key,
                record.value,
                [*record.headers, ("dead-letter-reason", reason.encode()[:1000])],
                topic=codec.DEAD_LETTER_TOPIC,
            )
        log.warning("%s: dead letter at %s/%s: %s", self.consumer, record.partition, record.offset, reason)

    async def _save_offsets(self, partitions: set[int] | None = None) -> None:
        """Save how far each partition is done (fenced: refused once another replica owns it)."""
        assert self.fence is not None
        moved: dict[int, int] = {}
        for partition in self.owned if partitions is None else partitions & self.owned:
            done = self.committable(partition)
            if done > self.stored.get(partition, 0):
                moved[partition] = done
        await self.fence.save_offsets(self.conn, codec.EVENTS_TOPIC, moved)
        self.stored.update(moved)
        if moved:
            failpoints.hit(f"{self.consumer}.after_save_offset")


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
