"""A role's consumer group: partitions assigned to this replica, started at our offsets, records in order.

The worker's callbacks run here; faust's side of it is in `processors.groups.faustapp`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiokafka
from faust.types import Message

from eventstore.settings import Settings
from processors.groups.faustapp import GroupApp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """One record of `agentlog.events` as the broker holds it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


OnAssigned = Callable[[set[int]], Awaitable[dict[int, int]]]
OnRevoked = Callable[[set[int]], Awaitable[None]]
OnRecords = Callable[[int, Sequence[Record]], Awaitable[None]]
OnError = Callable[[Record, Exception], Awaitable[None]]


def _headers(headers: object) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers as pairs (faust types them as a list of pairs or a mapping)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    assert isinstance(pairs, Iterable)
    return tuple((str(k), bytes(v)) for k, v in pairs)


class GroupStopped(Exception):
    """The group consumer stopped because a callback failed in a way that must stop the worker."""


def instance_id(settings: Settings, group: str) -> str | None:
    """The static member id of this replica in `group`, or None for a dynamic member."""
    if not settings.kafka_static_membership:
        return None
    return f"{group}.{settings.instance}"


class GroupConsumer:
    """One worker role's membership of its consumer group (`group` is the faust app id).

    - `on_assigned(partitions)` returns where each newly assigned partition starts (our
      offsets, from Postgres); no record of a partition is delivered before it returned.
    - `on_revoked(partitions)` runs after the last record of those partitions was handled
      and before another replica can get them: drain and save offsets there.
    - `on_records(partition, records)` gets records of one partition in offset order, one at
      a time, or with `batch` > 1 up to that many, gathered for at most `batch_window_s`.
    - An exception escaping `on_records` goes to `on_error(record, exc)` (dead-letter it)
      and the next record follows. A batch that raises must have taken no effect (one
      transaction): its records are handed over again one at a time to find the bad ones.
    - If `on_error` raises, or an assignment callback does, nothing more is delivered and
      `run` raises `GroupStopped`: the worker is restarted and resumes from its stored offsets.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        *,
        on_assigned: OnAssigned,
        on_revoked: OnRevoked,
        on_records: OnRecords,
        on_error: OnError,
        batch: int = 1,
        batch_window_s: float = 0.01,
    ) -> None:
        self.settings = settings
        self.group = group
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.on_records = on_records
        self.on_error = on_error
        if batch < 1 or batch_window_s <= 0:
            raise ValueError("batch must be at least 1 and batch_window_s positive")
        self.batch = batch
        self.batch_window_s = batch_window_s
        # The next offset to deliver, per partition this replica owns and has positioned.
        self.position: dict[int, int] = {}
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        # Held while the worker handles records: a revocation waits for the record in hand.
        self._delivering = asyncio.Lock()
        self._app: GroupApp | None = None
        # The group generation of the current assignment (grows with every rebalance of the
        # group within a log epoch): set before `on_assigned` runs, for fencing stale owners.
        self.generation = 0

    @property
    def assignment(self) -> set[int]:
        """The partitions this replica owns now."""
        return set(self.position)

    @property
    def kafka_consumer(self) -> aiokafka.AIOKafkaConsumer | None:
        """The aiokafka consumer under faust, for inspection (None when not started)."""
        return None if self._app is None else self._app.kafka_consumer()

    async def start(self) -> None:
        """Join the group; returns once this replica's first assignment is done (on Tansu
        about half the session/rebalance timeout, at least 5 s)."""
        app = GroupApp(self.settings, self.group, self, instance_id(self.settings, self.group))
        app.subscribe(self.batch, self.batch_window_s)
        self._app = app
        await app.start()

    async def stop(self) -> None:
        """Hand back what this replica owns (`on_revoked` runs first), then leave the group."""
        if self._app is None:
            return
        app, self._app = self._app, None
        try:
            # aiokafka leaves the group without calling the revocation listener, so the worker
            # would never save what it did; revoke here, once the record in hand is done.
            await self.revoked(set(self.position))
        finally:
            await app.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, consume until `stop` is set, stop; raises `GroupStopped` if a callback failed."""
        try:
            await self.start()
            assert self._app is not None
            stopping = asyncio.ensure_future(stop.wait())
            # Ends when a callback failed, or when faust stopped or crashed on its own.
            failing = asyncio.ensure_future(self._app.wait_first(self._failed.wait()))
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failing.cancel()
            if not stop.is_set() and self.failure is None:
                self._fail(self._app.crash_reason or RuntimeError("faust stopped on its own"))
        finally:
            await self.stop()
        if self.failure is not None:
            raise GroupStopped(f"{self.group}: {self.failure}") from self.failure

    def _fail(self, exc: BaseException) -> None:
        log.error("%s: stopping: %r", self.group, exc)
        if self.failure is None:
            self.failure = exc
        self.position.clear()
        self._failed.set()

    # Hooks, called by the faust side.

    async def assigned(self, partitions: set[int], generation: int) -> None:
        """Ask the worker where the new partitions start; nothing is delivered for them before."""
        if self.failure is not None:
            return
        self.generation = generation
        try:
            starts = await self.on_assigned(set(partitions))
        except Exception as exc:
            self._fail(exc)
            return
        for partition in partitions:
            self.position[partition] = starts.get(partition, 0)
        log.info("%s: assigned %s at %s", self.group, sorted(partitions), starts)

    async def revoked(self, partitions: set[int]) -> None:
        """Stop delivering the partitions, then let the worker drain and save."""
        async with self._delivering:
            owned = partitions & set(self.position)
            for partition in partitions:
                self.position.pop(partition, None)
        if not owned or self.failure is not None:
            return
        log.info("%s: revoked %s", self.group, sorted(owned))
        try:
            await self.on_revoked(owned)
        except Exception as exc:
            self._fail(exc)

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """Where faust must seek each partition: the next offset to deliver."""
        return {p: self.position[p] for p in partitions if p in self.position}

    async def deliver(self, messages: list[Message]) -> None:
        """Hand records to the worker, a partition at a time; never raises (faust would ack
        and drop them silently)."""
        by_partition: dict[int, list[Record]] = {}
        for message in messages:
            by_partition.setdefault(message.partition, []).append(_record(message))
        async with self._delivering:
            for partition, records in by_partition.items():
                # Skip what is not ours (revoked, or not positioned yet) and what lies below
                # where the worker starts: records fetched before the seek.
                start = self.position.get(partition)
                fresh = [r for r in records if start is not None and r.offset >= start]
                if fresh and self.failure is None:
                    await self._hand_over(partition, fresh)

    async def _hand_over(self, partition: int, records: list[Record]) -> None:
        try:
            await self.on_records(partition, records)
        except Exception as exc:
            if len(records) > 1:
                # A batch that raised took no effect (on_records' contract): again one by one,
                # so exactly the failing records are dead-lettered.
                for record in records:
                    if self.failure is None:
                        await self._hand_over(partition, [record])
                return
            log.exception("%s: record %s/%s failed", self.group, partition, records[0].offset)
            try:
                await self.on_error(records[0], exc)
            except Exception as fatal:
                self._fail(fatal)
                return
        self.position[partition] = records[-1].offset + 1


def _record(message: Message) -> Record:
    return Record(
        message.partition,
        message.offset,
        message.key,
        message.value,
        _headers(message.headers),
        None if message.timestamp is None else int(message.timestamp * 1000),
    )
