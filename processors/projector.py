"""The projector: batches of the log into Postgres, offsets in the same transaction.

On start it seeks every partition to the offset stored for this log epoch; an offset of
another epoch is never applied, so a fresh log is read from its beginning while the rows
of older epochs stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import ConsumerRecord

from eventstore import codec, store
from eventstore.errors import DecodeError
from eventstore.log import KafkaLog, PartitionReader
from eventstore.settings import Settings
from observe.metrics import Metrics
from processors import failpoints

log = logging.getLogger(__name__)

CONSUMER = "projector"


def to_incoming(record: ConsumerRecord[bytes, bytes]) -> store.Incoming:
    """Decode a record for the store, keeping its bytes and the reason if it does not decode."""
    if codec.is_marker(record.headers):
        return store.Incoming(record.offset, record.key, record.value, record.headers, None, control=True)
    try:
        event = codec.decode(record.value, record.headers)
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
        self.reader = PartitionReader(settings)
        self.applied = 0
        self.dead_letters = 0
        self.position: dict[int, int] = {}
        # Replaced by the entry point with one that knows the instance (run_role).
        self.metrics = Metrics(settings.instance or "projector", "projector")

    async def run(self, stop: asyncio.Event) -> None:
        """Project until `stop` is set."""
        await self.reader.start()
        try:
            offsets = await store.load_offsets(self.conn, CONSUMER, self.epoch, codec.EVENTS_TOPIC)
            offsets = await self._past_gaps(offsets)
            self.reader.seek(offsets)
            self.position = dict(offsets)
            log.info("projector: epoch %s, starting at %s", self.epoch, offsets)
            batches = self.reader.batches(max_records=self.settings.projector_batch, timeout_ms=100)
            while not stop.is_set():
                records = await anext(batches)
                if records:
                    await self.project(records)
                self._measure_lag(records)
            # Drain before stopping: with an in-memory broker, what is not projected now is
            # gone after its restart.
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                records = await anext(batches)
                if not records:
                    break
                await self.project(records)
        finally:
            await self.reader.stop()

    async def _past_gaps(self, offsets: dict[int, int]) -> dict[int, int]:
        """Start each partition no earlier than the log's beginning; records the log no longer
        holds and never projected are lost: counted and logged, never skipped in silence."""
        start = dict(offsets)
        for partition, first in (await self.reader.beginning_offsets()).items():
            lost = max(0, first - offsets.get(partition, 0))
            self.metrics.log_gap.labels(CONSUMER, str(partition)).set(lost)
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

    async def project(self, records: list[ConsumerRecord[bytes, bytes]]) -> store.BatchResult:
        """Apply one partition's batch in one transaction."""
        partition = records[0].partition
        incoming = [to_incoming(r) for r in records]
        failpoints.hit("projector.before_batch")
        result = await store.apply_batch(
            self.conn,
            CONSUMER,
            self.epoch,
            codec.EVENTS_TOPIC,
            partition,
            incoming,
            on_event=lambda: failpoints.hit("projector.mid_batch"),
        )
        for item, reason in result.dead:
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

    def _measure_lag(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Records behind per partition, and how long the latest projected one waited."""
        if records:
            self.position[records[0].partition] = records[-1].offset + 1
            waited = time.time() - records[-1].timestamp / 1000
            self.metrics.projection_lag.set(max(0.0, waited))
        behind = 0
        for partition, highwater in self.reader.highwaters().items():
            lag = max(0, highwater - self.position.get(partition, 0))
            behind += lag
            self.metrics.consumer_lag.labels(CONSUMER, str(partition)).set(lag)
        if not records and behind == 0:
            self.metrics.projection_lag.set(0)
