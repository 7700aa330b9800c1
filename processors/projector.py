"""The projector: batches of the log into Postgres, offsets in the same transaction.

On start it seeks every partition to the offset stored for this log epoch; an offset of
another epoch is never applied, so a fresh log is read from its beginning while the rows
of older epochs stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from aiokafka import ConsumerRecord

from eventstore import codec, outbox, store
from eventstore import log as kafka_log
from eventstore.errors import DecodeError, Shredded
from eventstore.log import KafkaLog, PartitionReader
from eventstore.records import Records
from eventstore.settings import Settings
from observe.metrics import Metrics
from processors import failpoints
from processors.groups import GroupConsumer

log = logging.getLogger(__name__)

CONSUMER = "projector"
# Folded sessions kept between batches (the projection is derived from the fold): the oldest
# are dropped past this many, and loaded from Postgres again if their session comes back.
MAX_STATES = 2000


class Raw(Protocol):
    """A record as read: by hand (aiokafka's ConsumerRecord) or in a group (groups.Record)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


async def to_incoming(records: Records, record: Raw) -> store.Incoming:
    """Decode a record for the store, keeping its bytes and the reason if it does not decode.
    A record of a deleted session (its key destroyed) is passed over like the log's marker."""
    if codec.is_marker(record.headers):
        return store.Incoming(record.offset, record.key, record.value, record.headers, None, control=True)
    try:
        event = await records.decode(record.key, record.value, record.headers)
    except Shredded:
        return store.Incoming(record.offset, record.key, record.value, record.headers, None, control=True)
    except DecodeError as exc:
        return store.Incoming(record.offset, record.key, record.value, record.headers, None, str(exc))
    return store.Incoming(record.offset, record.key, record.value, record.headers, event)


class Projector:
    """Consumes the log in batches and writes the projection exactly once."""

    def __init__(self, settings: Settings, kafka: KafkaLog, conn: store.AsyncConn, epoch: str) -> None:
        self.settings = settings
        self.kafka = kafka
        self.conn = conn
        self.epoch = epoch
        # Made by `run` when this projector reads every partition by hand (its aiokafka
        # consumer must not exist unclosed when a group gives the partitions instead).
        self.reader: PartitionReader | None = None
        self.applied = 0
        self.dead_letters = 0
        self.position: dict[int, int] = {}
        self.group: GroupConsumer | None = None  # with AGENTLOG_CONSUMER_GROUPS
        self.gaps: dict[int, int] = {}  # records lost per partition (readiness false)
        self.states: store.States = {}
        self.sweep: outbox.Sweep | None = None  # made by `run` (unless AGENTLOG_OUTBOX_SWEEP_S=0)
        # Replaced by the entry point with one that knows the instance (run_role).
        self.metrics = Metrics(settings.instance or "projector", "projector")

    def ready(self) -> bool:
        """False while the log lost records of a partition before they were projected."""
        return not any(self.gaps.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Project until `stop` is set; meanwhile append again what the api acknowledged and
        a lost log no longer holds (eventstore/outbox.py)."""
        sweeping = None
        if self.settings.outbox_sweep_s > 0:
            self.sweep = outbox.Sweep(
                self.settings, self.kafka, await kafka_log.partition_count(self.settings)
            )
            every = self.settings.outbox_sweep_s
            sweeping = asyncio.create_task(self.sweep.run(lambda: self.position, stop, every))
        try:
            await self._project(stop)
        finally:
            if sweeping is not None:
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping

    async def _project(self, stop: asyncio.Event) -> None:
        if self.settings.consumer_groups:
            await self._run_in_group(stop)
            return
        self.reader = reader = PartitionReader(self.settings)
        await reader.start()
        try:
            offsets = await store.load_offsets(self.conn, CONSUMER, self.epoch, codec.EVENTS_TOPIC)
            offsets = self._past_gaps(offsets, await reader.beginning_offsets())
            reader.seek(offsets)
            self.position = {tp.partition: offsets.get(tp.partition, 0) for tp in reader.partitions} | offsets
            log.info("projector: epoch %s, starting at %s", self.epoch, offsets)
            batches = reader.batches(max_records=self.settings.projector_batch, timeout_ms=100)
            while not stop.is_set():
                records = await anext(batches)
                if records:
                    await self.project(records)
                self._measure_lag(reader, records)
            # Drain before stopping: with an in-memory broker, what is not projected now is
            # gone after its restart.
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                records = await anext(batches)
                if not records:
                    break
                await self.project(records)
        finally:
            await reader.stop()

    def _past_gaps(self, offsets: dict[int, int], firsts: dict[int, int]) -> dict[int, int]:
        """Start each partition no earlier than the log's beginning; records the log no longer
        holds and never projected are lost: counted and logged, never skipped in silence."""
        start = dict(offsets)
        for partition, first in firsts.items():
            lost = max(0, first - offsets.get(partition, 0))
            self.metrics.log_gap.labels(CONSUMER, str(partition)).set(lost)
            self.gaps[partition] = lost
            if lost:
                log.error(
                    "projector: partition %d starts at %d but only %d was projected: %d record(s)"
                    " lost (is the events topic's retention finite?)",
                    partition,
                    first,
                    offsets.get(partition, 0),
                    lost,
                )
                start[partition] = first
        return start

    async def _run_in_group(self, stop: asyncio.Event) -> None:
        """Project the partitions the group gives this replica. Replicas need no fence: a batch
        commits with its partition's offset row locked and skips what is below it, so a late
        batch of a replica that lost the partition writes nothing twice."""
        self.group = GroupConsumer(
            self.settings,
            f"agentlog.{CONSUMER}",
            on_assigned=self._assigned,
            on_revoked=self._revoked,
            on_records=self._records,
            on_error=self._failed,
            batch=self.settings.projector_batch,
        )
        await self.group.run(stop)

    async def _assigned(self, partitions: set[int]) -> dict[int, int]:
        stored = await store.load_offsets(self.conn, CONSUMER, self.epoch, codec.EVENTS_TOPIC)
        firsts = await kafka_log.beginning_offsets(self.settings, sorted(partitions))
        start = self._past_gaps({p: stored.get(p, 0) for p in partitions}, firsts)
        log.info("projector: assigned %s, starting at %s", sorted(partitions), start)
        self.position.update(start)
        return start

    async def _revoked(self, partitions: set[int]) -> None:
        # Every batch committed with its offsets: nothing is in flight to save.
        for partition in partitions:
            self.position.pop(partition, None)

    async def _records(self, partition: int, records: Sequence[Raw]) -> None:
        await self.project(list(records))
        self.position[partition] = records[-1].offset + 1

    async def _failed(self, record: Raw, exc: Exception) -> None:
        """A batch that raised, one record at a time: apply_batch dead-letters what it cannot
        store itself, so what reaches here is Postgres or the log being down: stop (a restart
        resumes from the stored offsets) rather than set a good record aside."""
        raise exc

    async def project(self, records: Sequence[Raw]) -> store.BatchResult:
        """Apply one partition's batch in one transaction."""
        partition = records[0].partition
        await self.kafka.records.prefetch(records)
        incoming = [await to_incoming(self.kafka.records, r) for r in records]
        shredded = sum(1 for item in incoming if item.control and not codec.is_marker(item.headers))
        self.metrics.shredded.labels(CONSUMER).inc(shredded)
        failpoints.hit("projector.before_batch")
        result = await store.apply_batch(
            self.conn,
            CONSUMER,
            self.epoch,
            codec.EVENTS_TOPIC,
            partition,
            incoming,
            on_event=lambda: failpoints.hit("projector.mid_batch"),
            states=self.states,
        )
        for sid in list(self.states)[: max(0, len(self.states) - MAX_STATES)]:
            del self.states[sid]
        for item, reason in result.dead:
            if item.offset not in result.first_dead:
                continue  # another consumer refused it first and published it
            await self.kafka.append_raw(
                item.key,
                item.value,
                [*item.headers, ("dead-letter-reason", reason.encode()[:1000])],
                topic=codec.DEAD_LETTER_TOPIC,
            )
        self.applied += result.applied
        self.metrics.projected.inc(result.applied)
        self.metrics.dead_letters.labels(CONSUMER).inc(result.dead_letters)
        if result.dead_letters:
            self.dead_letters += result.dead_letters
            log.warning("projector: %d dead letter(s) in partition %d", result.dead_letters, partition)
        return result

    def _measure_lag(self, reader: PartitionReader, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Records behind per partition, and how long the latest projected one waited."""
        if records:
            self.position[records[0].partition] = records[-1].offset + 1
            waited = time.time() - records[-1].timestamp / 1000
            self.metrics.projection_lag.set(max(0.0, waited))
        behind = 0
        for partition, highwater in reader.highwaters().items():
            lag = max(0, highwater - self.position.get(partition, 0))
            behind += lag
            self.metrics.consumer_lag.labels(CONSUMER, str(partition)).set(lag)
        if not records and behind == 0:
            self.metrics.projection_lag.set(0)
