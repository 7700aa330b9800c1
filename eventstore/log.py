"""The Kafka adapter: acknowledged appends keyed by session, partition reads, the log epoch.

aiokafka's unsafe defaults are overridden here and nowhere else (`producer_config`,
`consumer_config`). Events become records and records events through `KafkaLog.records`
(eventstore/records.py: sealed with the session's key, by reference when too large).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from eventstore import codec
from eventstore.errors import AppendTimeout, LogError, RecordTooLarge
from eventstore.events import Event
from eventstore.records import Records
from eventstore.settings import Settings
from eventstore.vault import Vault

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict[str, Any]:
    """Producer options: acks from all replicas, a deliberate request size, idempotence per broker."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "max_request_size": settings.kafka_max_request_size,
        "linger_ms": 0,
        "request_timeout_ms": int(settings.kafka_append_timeout_s * 1000),
    }


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Consumer options: no auto-commit (offsets live in Postgres), read from the start."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "max_partition_fetch_bytes": settings.kafka_max_request_size,
        "isolation_level": "read_uncommitted",
    }


@dataclass(frozen=True)
class Appended:
    """Where an acknowledged event landed (-1, -1: not appended, its session was deleted)."""

    partition: int
    offset: int


FORGOTTEN = Appended(-1, -1)
# (key, value, headers) of one record.
Record = tuple[bytes | None, bytes, codec.Headers]


class KafkaLog:
    """Appends events (acknowledged or an error, never a hang) and reads partitions."""

    def __init__(self, settings: Settings, topic: str = codec.EVENTS_TOPIC) -> None:
        self.settings = settings
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self.records = Records(settings)

    @property
    def vault(self) -> Vault:
        """The data keys and kept payloads its records are made with."""
        return self.records.vault

    async def start(self) -> None:
        """Check the master key (if one is set: a keyless writer needs no database), then
        connect the producer, retrying while the broker comes up (bounded)."""
        if self.vault.encrypting:
            await self.vault.check()
        deadline = asyncio.get_running_loop().time() + self.settings.kafka_append_timeout_s * 3
        while True:
            producer = AIOKafkaProducer(**producer_config(self.settings))
            try:
                await producer.start()
                self._producer = producer
                return
            except KafkaError as exc:
                await producer.stop()
                if asyncio.get_running_loop().time() > deadline:
                    raise LogError(f"cannot reach {self.settings.kafka_bootstrap}: {exc}") from exc
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await self.vault.close()

    async def append(self, event: Event) -> Appended:
        """Append one event; returns once the broker acknowledged it."""
        return (await self.append_many([event]))[0]

    async def append_many(self, events: Sequence[Event]) -> list[Appended]:
        """Append events in order (one session's events keep their order); all acknowledged.

        Every record is made before any is sent: one too large even by reference appends
        none, so a refused user turn leaves no session_started behind. Events of a deleted
        session are not appended (FORGOTTEN): nobody could read them."""
        return await self.send(events, await self.encode(events))

    async def encode(self, events: Sequence[Event]) -> list[Record | None]:
        """The records of events, as `append_many` sends them (None: a deleted session's).
        RecordTooLarge if any is too large even by reference."""
        return [await self.records.encode(event) for event in events]

    async def send(self, events: Sequence[Event], records: Sequence[Record | None]) -> list[Appended]:
        """Append the records `encode` made of `events`, in order; all acknowledged."""
        acked = iter(await self._acked(await self._queued(records)))
        for event, record in zip(events, records, strict=True):
            if record is None:
                log.info("not appended: %s of deleted session %s", event.type, event.session_id)
        return [FORGOTTEN if record is None else next(acked) for record in records]

    async def queue(self, events: Sequence[Event]) -> list[asyncio.Future[Any]]:
        """Send events in order without waiting for the broker to acknowledge them: the
        producer keeps their order; `confirm` waits. A deleted session's are not sent."""
        return await self._queued(await self.encode(events))

    async def _queued(self, records: Sequence[Record | None]) -> list[asyncio.Future[Any]]:
        return [await self._send(self.topic, *record) for record in records if record is not None]

    async def confirm(self, sent: Sequence[asyncio.Future[Any]]) -> None:
        """Wait until the broker acknowledged what `queue` sent (AppendTimeout, LogError)."""
        await self._acked(list(sent))

    async def append_records(self, records: Sequence[Record]) -> list[Appended]:
        """Append records as they are, in order; all acknowledged (the outbox's sweep)."""
        return await self._acked(await self._queued(records))

    async def append_raw(
        self, key: bytes | None, value: bytes | None, headers: codec.Headers, topic: str | None = None
    ) -> Appended:
        """Append bytes as they are (dead letters, tests of poison records)."""
        fut = await self._send(topic or self.topic, key, value, headers)
        return (await self._acked([fut]))[0]

    async def _send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: codec.Headers
    ) -> asyncio.Future[Any]:
        if self._producer is None:
            raise LogError("KafkaLog.start() was not called")
        try:
            return await asyncio.wait_for(
                self._producer.send(topic, value=value, key=key, headers=headers),
                self.settings.kafka_append_timeout_s,
            )
        except TimeoutError as exc:
            raise AppendTimeout(f"append to {topic} not queued in time") from exc
        except MessageSizeTooLargeError as exc:
            raise RecordTooLarge(f"append to {topic} refused: {exc}") from exc
        except KafkaError as exc:
            raise LogError(f"append to {topic} failed: {exc}") from exc

    async def _acked(self, futures: list[asyncio.Future[Any]]) -> list[Appended]:
        try:
            metas = await asyncio.wait_for(asyncio.gather(*futures), self.settings.kafka_append_timeout_s)
        except TimeoutError as exc:
            raise AppendTimeout(
                f"broker did not acknowledge within {self.settings.kafka_append_timeout_s}s"
            ) from exc
        except KafkaError as exc:
            raise LogError(f"append failed: {exc}") from exc
        return [Appended(m.partition, m.offset) for m in metas]


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            await admin.start()
            return admin
        except KafkaError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


# The events topic is the source of truth and the dead letters are evidence: both keep
# every record, whatever the broker's default retention (Kafka deletes after 7 days).
KEEP_EVERYTHING = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}


async def ensure_topics(settings: Settings) -> None:
    """Create the events and dead-letter topics if missing (partition count from settings),
    with their retention stated: they keep everything."""
    admin = await _admin(settings)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                settings.partitions,
                settings.kafka_replication_factor,
                topic_configs=dict(KEEP_EVERYTHING),
            )
            for name in (codec.EVENTS_TOPIC, codec.DEAD_LETTER_TOPIC)
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    await _mark(settings)


async def _first_record(
    settings: Settings, topic: str, partition: int
) -> ConsumerRecord[bytes, bytes] | None:
    """The first record the partition still holds, if any."""
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if end <= first:
            return None
        consumer.seek(tp, first)
        # Tansu may answer a fetch empty before it has the batch, and a large in-memory log
        # slows every fetch (measured: none within 10 s at ~600 k records of 1 KB).
        deadline = asyncio.get_running_loop().time() + settings.kafka_append_timeout_s * 3
        while asyncio.get_running_loop().time() < deadline:
            got = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            if got.get(tp):
                record: ConsumerRecord[bytes, bytes] = got[tp][0]
                return record
        raise LogError(f"{topic}/{partition} holds offsets {first}..{end} but returned none")
    finally:
        await consumer.stop()


async def _mark(settings: Settings) -> None:
    """Give an empty events topic its identity: a marker record first in partition 0. (Two
    processes racing may both append one; the first is the identity, the other is skipped.)"""
    if await _first_record(settings, codec.EVENTS_TOPIC, 0) is not None:
        return
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        key, value, headers = codec.marker(str(uuid.uuid4()))
        await producer.send_and_wait(codec.EVENTS_TOPIC, value, key=key, headers=headers, partition=0)
    except KafkaError as exc:
        raise LogError(f"cannot mark {codec.EVENTS_TOPIC}: {exc}") from exc
    finally:
        await producer.stop()


async def beginning_offsets(
    settings: Settings, partitions: Sequence[int], topic: str = codec.EVENTS_TOPIC
) -> dict[int, int]:
    """The first offset the log still holds, per partition (a short-lived consumer)."""
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        firsts = await consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: off for tp, off in firsts.items()}
    finally:
        await consumer.stop()


async def topic_config(settings: Settings, topic: str = codec.EVENTS_TOPIC) -> dict[str, str]:
    """The topic's configuration as the broker reports it (retention and the like)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = await _admin(settings)
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {
            entry[0]: entry[1]
            for response in responses
            for resource in response.resources
            for entry in resource[4]
        }
    finally:
        await admin.close()


async def partition_count(settings: Settings, topic: str = codec.EVENTS_TOPIC) -> int:
    """How many partitions the topic has."""
    admin = await _admin(settings)
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()


async def log_epoch(settings: Settings) -> str:
    """The identity of the log: the broker's cluster id (a fresh one per embedded broker
    start) and the events topic's marker (a topic deleted and made again is a new log).
    A topic made before markers existed has none: its epoch is the cluster's alone."""
    admin = await _admin(settings)
    try:
        cluster = str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()
    first = await _first_record(settings, codec.EVENTS_TOPIC, 0)
    if first is None or not codec.is_marker(first.headers) or first.value is None:
        return cluster
    return f"{cluster}/{first.value.decode()}"


class FetchPace:
    """How long a consumer's fetches wait at the broker: `kafka_fetch_max_wait_ms` while records
    flow, `kafka_idle_fetch_max_wait_ms` once none came for `IDLE_AFTER_S` (see the settings).

    aiokafka reads the wait from its fetcher for every fetch request it builds
    (`Fetcher._fetch_max_wait_ms`, a private attribute of the locked aiokafka 0.14, checked by
    tests/unit/test_fetch_pace.py): setting it takes effect from the next fetch, from any thread.
    """

    IDLE_AFTER_S = 5.0

    def __init__(self, settings: Settings) -> None:
        self.busy_ms = settings.kafka_fetch_max_wait_ms
        self.idle_ms = settings.kafka_idle_fetch_max_wait_ms
        self.last_records = time.monotonic()
        self.current = self.busy_ms

    @property
    def idle(self) -> bool:
        """No record for `IDLE_AFTER_S`."""
        return time.monotonic() - self.last_records >= self.IDLE_AFTER_S

    def saw(self, records: int, consumer: AIOKafkaConsumer | None) -> None:
        """After a fetch returned `records` records: the wait its next fetch should have."""
        if records:
            self.last_records = time.monotonic()
        wanted = self.idle_ms if self.idle else self.busy_ms
        if wanted == self.current:
            return
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = wanted
            self.current = wanted


class PartitionReader:
    """A consumer with every partition of the topic assigned by hand: no group join, offsets ours."""

    def __init__(self, settings: Settings, topic: str = codec.EVENTS_TOPIC) -> None:
        self.settings = settings
        self.topic = topic
        self.consumer = AIOKafkaConsumer(**consumer_config(settings))
        self.partitions: list[TopicPartition] = []
        self.pace = FetchPace(settings)

    async def start(self) -> list[TopicPartition]:
        """Connect and assign all partitions of the topic."""
        await self.consumer.start()
        for _ in range(100):
            parts = self.consumer.partitions_for_topic(self.topic)
            if parts:
                break
            await self.consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        else:
            raise LogError(f"topic {self.topic} has no partitions")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        return self.partitions

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    def seek(self, positions: dict[int, int]) -> None:
        """Position each partition at its next offset to read (absent: the beginning)."""
        for tp in self.partitions:
            self.consumer.seek(tp, positions.get(tp.partition, 0))

    def highwaters(self) -> dict[int, int]:
        """The log end per partition as of the latest fetch (partitions not fetched yet left out)."""
        found = {tp.partition: self.consumer.highwater(tp) for tp in self.partitions}
        return {partition: end for partition, end in found.items() if end is not None}

    async def beginning_offsets(self) -> dict[int, int]:
        """The first offset the log still holds, per partition (above 0 once retention deleted some)."""
        firsts = await self.consumer.beginning_offsets(self.partitions)
        return {tp.partition: off for tp, off in firsts.items()}

    async def end_offsets(self) -> dict[int, int]:
        """The next offset to be written, per partition."""
        ends = await self.consumer.end_offsets(self.partitions)
        return {tp.partition: off for tp, off in ends.items()}

    async def batches(
        self, max_records: int, timeout_ms: int = 200
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """Batches of records, each batch from one partition in offset order; forever."""
        while True:
            got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            self.pace.saw(sum(len(records) for records in got.values()), self.consumer)
            for records in got.values():
                if records:
                    yield records
            if not got:
                yield []


async def read_partition(
    settings: Settings, partition: int, topic: str = codec.EVENTS_TOPIC
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of one partition from the beginning to its end as of the call.

    The end is where a fetch comes back empty at or past `end_offsets()`: Tansu can answer
    `end_offsets()` short of the last batch, so it is a lower bound, not the end.
    """
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        position = 0
        while True:
            got = await consumer.getmany(tp, timeout_ms=300, max_records=1000)
            records = got.get(tp, [])
            for record in records:
                position = record.offset + 1
                yield record
            if not records and position >= end:
                return
    finally:
        await consumer.stop()


async def bounds(
    settings: Settings, partitions: Sequence[int], topic: str = codec.EVENTS_TOPIC
) -> tuple[dict[int, int], dict[int, int]]:
    """The first offset the log still holds and the next one to be written, per partition."""
    if not partitions:
        return {}, {}
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: o for tp, o in firsts.items()}, {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


def partition_for(session_id: str, partitions: int) -> int:
    """The partition aiokafka's default partitioner picks for a session's key."""
    from aiokafka.partitioner import DefaultPartitioner

    return int(DefaultPartitioner()(codec.key_for(session_id), list(range(partitions)), []))
