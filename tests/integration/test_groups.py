"""Consumer groups on the real embedded broker: replicas split the partitions and take over a
stopped or SIGKILLed one's; partitions start where `on_assigned` says; a raising worker is
dead-lettered and the partition goes on; the fetch wait is ours, not faust's 1.5 s."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventstore import codec
from eventstore import log as kafka_log
from eventstore.settings import Settings
from processors.groups import GroupConsumer, GroupStopped, ManualConsumer, Record, instance_id
from processors.groups.faustapp import group_options
from tests.services import Broker, wait_until

pytestmark = pytest.mark.services

PARTITIONS = 4
ALL = set(range(PARTITIONS))
PRELOADED = 5  # records per partition appended before the flow group starts
START = 3  # where the flow group's on_assigned starts every partition


@dataclass
class Member:
    """A group member that records what its callbacks saw, in one journal shared by a test."""

    name: str
    settings: Settings
    group: str
    journal: list[tuple[str, str, frozenset[int]]]
    starts: dict[int, int] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    errors: list[tuple[Record, Exception]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None  # GroupConsumer.run, when the member runs as a worker would
    batch: int = 1
    batches: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = GroupConsumer(
            self.settings,
            self.group,
            on_assigned=self.on_assigned,
            on_revoked=self.on_revoked,
            on_records=self.on_records,
            on_error=self.on_error,
            batch=self.batch,
        )

    async def on_assigned(self, partitions: set[int]) -> dict[int, int]:
        self.journal.append((self.name, "assigned", frozenset(partitions)))
        return {p: self.starts[p] for p in partitions if p in self.starts}

    async def on_revoked(self, partitions: set[int]) -> None:
        self.journal.append((self.name, "revoked", frozenset(partitions)))

    async def on_records(self, partition: int, records: Sequence[Record]) -> None:
        self.batches.append((partition, [(r.partition, r.offset) for r in records]))
        # All or nothing, as a batch must be (one transaction).
        for record in records:
            if record.value in (b"poison", b"fatal"):
                raise ValueError(f"cannot handle {record.value!r}")
        self.records.extend(records)
        self.arrived.set()

    async def on_error(self, record: Record, exc: Exception) -> None:
        if record.value == b"fatal":
            raise ConnectionError("dead-letter store unreachable")
        self.errors.append((record, exc))

    def values(self, partition: int | None = None) -> list[bytes | None]:
        return [r.value for r in self.records if partition is None or r.partition == partition]


def keys_by_partition() -> dict[int, bytes]:
    """A key that lands in each partition."""
    found: dict[int, bytes] = {}
    n = 0
    while len(found) < PARTITIONS:
        found.setdefault(kafka_log.partition_for(f"s{n}", PARTITIONS), codec.key_for(f"s{n}"))
        n += 1
    return found


KEYS = keys_by_partition()


@pytest.fixture(scope="module")
def broker(log_dir: Path) -> Iterator[Broker]:
    broker = Broker(log_dir)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
async def settings(broker: Broker) -> Settings:
    settings = Settings(kafka_bootstrap=broker.bootstrap, partitions=PARTITIONS)
    await kafka_log.ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def kafka(settings: Settings) -> AsyncIterator[kafka_log.KafkaLog]:
    log = kafka_log.KafkaLog(settings)
    await log.start()
    yield log
    await log.stop()


async def append(kafka: kafka_log.KafkaLog, partition: int, value: bytes) -> int:
    appended = await kafka.append_raw(KEYS[partition], value, [("h", b"v")])
    assert appended.partition == partition
    return appended.offset


@pytest.fixture(scope="module")
async def flow(settings: Settings, kafka: kafka_log.KafkaLog) -> AsyncIterator[Member]:
    """One member alone in its group, every partition started at its record number START
    (partition 0 begins with the log's identity marker, so offsets are read, not assumed)."""
    offsets: dict[int, list[int]] = {}
    for partition in ALL:
        offsets[partition] = [
            await append(kafka, partition, f"pre-{partition}-{i}".encode()) for i in range(PRELOADED)
        ]
    starts = {partition: offsets[partition][START] for partition in ALL}
    member = Member("flow", settings, "test-flow", [], starts=starts, batch=50)
    stop = asyncio.Event()
    member.task = task = asyncio.create_task(member.consumer.run(stop))
    await wait_until(lambda: asyncio.sleep(0, member.consumer.assignment == ALL), within=30)
    yield member
    stop.set()
    await asyncio.gather(task, return_exceptions=True)


async def test_partitions_start_where_on_assigned_says(flow: Member) -> None:
    await wait_until(lambda: asyncio.sleep(0, len(flow.records) >= PARTITIONS * (PRELOADED - START)))
    for partition in ALL:
        mine = [r for r in flow.records if r.partition == partition]
        first = flow.starts[partition]
        assert [r.offset for r in mine[: PRELOADED - START]] == list(range(first, first + PRELOADED - START))
        assert mine[0].value == f"pre-{partition}-{START}".encode()
        assert mine[0].key == KEYS[partition] and mine[0].headers == (("h", b"v"),)
    # Records fetched together arrive together, each batch one partition's, in offset order.
    assert any(len(batch) > 1 for _, batch in flow.batches)
    for partition, batch in flow.batches:
        assert {p for p, _ in batch} == {partition}
        assert [o for _, o in batch] == sorted(o for _, o in batch)


async def test_a_raising_worker_is_dead_lettered_and_its_partition_goes_on(
    flow: Member, kafka: kafka_log.KafkaLog
) -> None:
    # Likely in one batch: the batch raises, is handed over again record by record, and only
    # the poison is dead-lettered; its neighbours arrive once each.
    await append(kafka, 1, b"before-poison")
    poison = await append(kafka, 1, b"poison")
    await append(kafka, 1, b"after-poison")
    await wait_until(lambda: asyncio.sleep(0, b"after-poison" in flow.values(1)))
    [(record, exc)] = flow.errors
    assert (record.partition, record.offset, record.value) == (1, poison, b"poison")
    assert isinstance(exc, ValueError)
    assert flow.values(1).count(b"before-poison") == flow.values(1).count(b"after-poison") == 1
    assert flow.consumer.position[1] == poison + 2


async def test_a_hop_waits_our_fetch_wait_not_fausts(
    flow: Member, kafka: kafka_log.KafkaLog, settings: Settings
) -> None:
    kafka_consumer = flow.consumer.kafka_consumer
    assert kafka_consumer is not None
    # The aiokafka consumer faust runs is built with our wait, not its hard-coded 1500 ms.
    assert kafka_consumer._fetch_max_wait_ms == settings.kafka_fetch_max_wait_ms == 10
    assert kafka_consumer._fetcher._fetch_max_wait_ms == 10
    hops = []
    for i in range(20):
        flow.arrived.clear()
        began = time.monotonic()
        await append(kafka, i % PARTITIONS, f"hop-{i}".encode())
        await asyncio.wait_for(flow.arrived.wait(), 10)
        hops.append(time.monotonic() - began)
    print(f"hop p50 {statistics.median(hops) * 1000:.1f} ms, max {max(hops) * 1000:.1f} ms")
    # With faust's 1500 ms a hop on Tansu costs ~0.4-0.8 s; a generous bound against that.
    assert statistics.median(hops) < 0.5


async def test_the_group_timeouts_are_ours(flow: Member, settings: Settings) -> None:
    kafka_consumer = flow.consumer.kafka_consumer
    assert kafka_consumer is not None
    assert kafka_consumer._group_id == "test-flow"
    assert kafka_consumer._session_timeout_ms == settings.kafka_session_timeout_ms == 10_000
    assert kafka_consumer._rebalance_timeout_ms == settings.kafka_rebalance_timeout_ms == 10_000
    assert kafka_consumer._heartbeat_interval_ms == settings.kafka_heartbeat_interval_ms == 1_000
    assert kafka_consumer._group_instance_id is None
    # Offsets are ours: nothing is ever committed to Kafka for the group.
    # (A consumer of the group's name that never joins it, only to ask the broker.)
    asking = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id="test-flow")
    await asking.start()
    try:
        committed = [await asking.committed(TopicPartition(codec.EVENTS_TOPIC, p)) for p in ALL]
    finally:
        await asking.stop()
    assert committed == [None] * PARTITIONS


def test_static_membership_needs_a_lasting_instance() -> None:
    assert instance_id(Settings(), "reactor") is None
    static = Settings(kafka_static_membership=True, instance="reactor-0")
    assert instance_id(static, "reactor") == "reactor.reactor-0"
    assert (
        group_options(static, "reactor", instance_id(static, "reactor"))["group_instance_id"]
        == "reactor.reactor-0"
    )
    with pytest.raises(ValueError, match="AGENTLOG_INSTANCE"):
        Settings(kafka_static_membership=True)
    with pytest.raises(ValueError, match="a third"):
        Settings(kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=3000)


async def test_one_process_owning_every_partition_needs_no_group(
    settings: Settings, kafka: kafka_log.KafkaLog
) -> None:
    """The same callbacks by hand (ManualConsumer): no join, so no wait for one."""
    member = Member("manual", settings, "test-manual", [])
    member.starts = {p: await append(kafka, p, b"mark") + 1 for p in ALL}
    manual = ManualConsumer(
        settings,
        "manual",
        on_assigned=member.on_assigned,
        on_revoked=member.on_revoked,
        on_records=member.on_records,
        on_error=member.on_error,
        batch=50,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(manual.run(stop))
    for value in (b"m-before", b"poison", b"m-after"):
        await append(kafka, 0, value)
    await wait_until(lambda: asyncio.sleep(0, b"m-after" in member.values(0)), within=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert member.journal == [("manual", "assigned", frozenset(ALL)), ("manual", "revoked", frozenset(ALL))]
    assert member.values() == [b"m-before", b"m-after"]
    assert [record.value for record, _ in member.errors] == [b"poison"]


async def test_a_failing_on_assigned_stops_the_group_and_positions_nothing() -> None:
    """Without a broker: faust's rebalance listener would log and swallow the error, so the
    adapter records it, positions nothing (nothing is delivered) and `run` raises."""
    calls: list[set[int]] = []

    async def unreachable(partitions: set[int]) -> dict[int, int]:
        calls.append(partitions)
        raise ConnectionError("offsets unreachable")

    async def ignore(*args: object) -> None:
        pass

    consumer = GroupConsumer(
        Settings(), "g", on_assigned=unreachable, on_revoked=ignore, on_records=ignore, on_error=ignore
    )
    await consumer.assigned({0, 1}, generation=3)
    assert calls == [{0, 1}] and consumer.generation == 3
    assert consumer.assignment == set() and consumer.positions([0, 1]) == {}
    assert isinstance(consumer.failure, ConnectionError)
    await consumer.assigned({2}, generation=4)  # a failed consumer asks nothing more
    assert calls == [{0, 1}]


async def test_two_replicas_split_the_partitions_and_a_stopped_ones_move(settings: Settings) -> None:
    journal: list[tuple[str, str, frozenset[int]]] = []
    a = Member("a", settings, "test-split", journal)
    b = Member("b", settings, "test-split", journal)
    await a.consumer.start()
    try:
        await b.consumer.start()
        try:
            await wait_until(lambda: asyncio.sleep(0, a.consumer.assignment and b.consumer.assignment))
            assert a.consumer.assignment.isdisjoint(b.consumer.assignment)
            assert a.consumer.assignment | b.consumer.assignment == ALL
            moved = frozenset(b.consumer.assignment)
        finally:
            await b.consumer.stop()
        began = time.monotonic()
        await wait_until(lambda: asyncio.sleep(0, a.consumer.assignment == ALL), within=30)
        print(f"takeover after a clean stop: {time.monotonic() - began:.1f} s")
    finally:
        await a.consumer.stop()
    # b handed its partitions back (its worker saved) before a was given them.
    b_got = journal.index(("b", "assigned", moved))
    b_revoked = journal.index(("b", "revoked", moved))
    a_took = next(
        i
        for i, (who, what, ps) in enumerate(journal)
        if i > b_got and who == "a" and what == "assigned" and moved <= ps
    )
    assert b_got < b_revoked < a_took
    # One record at a time, in offset order from where on_assigned started it (0: it said none).
    for member in (a, b):
        for partition in ALL:
            offsets = [o for _, batch in member.batches for p, o in batch if p == partition]
            assert all(o == 0 or o == prev + 1 for prev, o in zip([-1, *offsets], offsets, strict=False))
    assert all(len(batch) == 1 for member in (a, b) for _, batch in member.batches)
    # Each rebalance is a new generation of the group (Tansu counts from 0): a fence for stale owners.
    assert a.consumer.generation > b.consumer.generation > 0
    # Every rebalance revokes everything first (no cooperative assignor in aiokafka 0.14).
    assert journal[a_took - 1] == ("a", "revoked", journal[a_took - 1][2])


def serve_member(bootstrap: str, group: str) -> None:
    """A member in a process of its own (for SIGKILL): prints each assignment, serves forever."""

    async def main() -> None:
        async def assigned(partitions: set[int]) -> dict[int, int]:
            print("assigned", ",".join(map(str, sorted(partitions))), flush=True)
            return {}

        async def ignore(*args: object) -> None:
            pass

        consumer = GroupConsumer(
            Settings(kafka_bootstrap=bootstrap, partitions=PARTITIONS),
            group,
            on_assigned=assigned,
            on_revoked=ignore,
            on_records=ignore,
            on_error=ignore,
        )
        await consumer.run(asyncio.Event())

    asyncio.run(main())


async def test_a_sigkilled_replicas_partitions_move_within_the_session_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    journal: list[tuple[str, str, frozenset[int]]] = []
    survivor = Member("survivor", settings, "test-kill", journal)
    await survivor.consumer.start()
    code = (
        "from tests.integration.test_groups import serve_member; "
        f"serve_member({settings.kafka_bootstrap!r}, 'test-kill')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        victim = {int(p) for p in line.decode().split()[1].split(",")}
        await wait_until(lambda: asyncio.sleep(0, survivor.consumer.assignment == ALL - victim))
        assert victim and victim.isdisjoint(survivor.consumer.assignment)
        os.kill(proc.pid, signal.SIGKILL)
        began = time.monotonic()
        bound = (settings.kafka_session_timeout_ms + settings.kafka_rebalance_timeout_ms) / 1000
        await wait_until(lambda: asyncio.sleep(0, survivor.consumer.assignment == ALL), within=bound + 10)
        took = time.monotonic() - began
        print(f"takeover after SIGKILL: {took:.1f} s")
        # Found dead after its session timeout, then one rebalance.
        assert took < bound
        assert journal[-2:] == [
            ("survivor", "revoked", frozenset(ALL - victim)),
            ("survivor", "assigned", frozenset(ALL)),
        ]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await survivor.consumer.stop()


async def test_a_failing_dead_letter_stops_the_group_before_the_next_record(
    flow: Member, kafka: kafka_log.KafkaLog
) -> None:
    """Last: it stops the flow group. Nothing past the failed record is delivered or passed."""
    fatal = await append(kafka, 2, b"fatal")
    await append(kafka, 2, b"after-fatal")
    assert flow.task is not None
    with pytest.raises(GroupStopped, match="dead-letter store unreachable"):
        await asyncio.wait_for(flow.task, 30)
    assert b"after-fatal" not in flow.values(2)
    assert all(record.offset != fatal for record, _ in flow.errors)
    assert flow.consumer.position == {}
