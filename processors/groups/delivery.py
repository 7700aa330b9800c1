"""What a worker is handed, however its partitions were assigned: records from its own offsets,
in order, a batch at a time; a failing record dead-lettered, a failing callback fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

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


class GroupStopped(Exception):
    """A callback failed in a way that must stop the worker (it is restarted and resumes)."""


class Delivery:
    """The worker's callbacks and where each of its partitions stands.

    - `on_assigned(partitions)` returns where each newly assigned partition starts (our
      offsets, from Postgres); no record of a partition is delivered before it returned.
    - `on_revoked(partitions)` runs after the last record of those partitions was handled
      and before another replica can get them: drain and save offsets there.
    - `on_records(partition, records)` gets records of one partition in offset order.
    - An exception escaping `on_records` goes to `on_error(record, exc)` (dead-letter it)
      and the next record follows. A batch that raises must have taken no effect (one
      transaction): its records are handed over again one at a time to find the bad ones.
    - If `on_error` raises, or an assignment callback does, nothing more is delivered and
      `run` raises `GroupStopped`: the worker is restarted and resumes from its stored offsets.
    """

    def __init__(
        self,
        name: str,
        *,
        on_assigned: OnAssigned,
        on_revoked: OnRevoked,
        on_records: OnRecords,
        on_error: OnError,
    ) -> None:
        self.name = name
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.on_records = on_records
        self.on_error = on_error
        # The next offset to deliver, per partition this replica owns and has positioned.
        self.position: dict[int, int] = {}
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        # Held while the worker handles records: a revocation waits for the record in hand.
        self._delivering = asyncio.Lock()
        # The group generation of the current assignment (grows with every rebalance of the
        # group within a log epoch): set before `on_assigned` runs, for fencing stale owners.
        self.generation = 0

    @property
    def assignment(self) -> set[int]:
        """The partitions this replica owns now."""
        return set(self.position)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; raises `GroupStopped` if a callback failed."""
        raise NotImplementedError

    def highwaters(self) -> dict[int, int]:
        """The log end per owned partition as of the latest fetch (those not fetched yet left out)."""
        return {}

    def fail(self, exc: BaseException) -> None:
        """Stop delivering for good; `run` raises `GroupStopped`."""
        log.error("%s: stopping: %r", self.name, exc)
        if self.failure is None:
            self.failure = exc
        self.position.clear()
        self.failed.set()

    def raise_failure(self) -> None:
        """Raise `GroupStopped` if a callback failed."""
        if self.failure is not None:
            raise GroupStopped(f"{self.name}: {self.failure}") from self.failure

    async def assigned(self, partitions: set[int], generation: int) -> None:
        """Ask the worker where the new partitions start; nothing is delivered for them before."""
        if self.failure is not None:
            return
        self.generation = generation
        try:
            starts = await self.on_assigned(set(partitions))
        except Exception as exc:
            self.fail(exc)
            return
        for partition in partitions:
            self.position[partition] = starts.get(partition, 0)
        log.info("%s: assigned %s at %s", self.name, sorted(partitions), starts)

    async def revoked(self, partitions: set[int]) -> None:
        """Stop delivering the partitions, then let the worker drain and save."""
        async with self._delivering:
            owned = partitions & set(self.position)
            for partition in partitions:
                self.position.pop(partition, None)
        if not owned or self.failure is not None:
            return
        log.info("%s: revoked %s", self.name, sorted(owned))
        try:
            await self.on_revoked(owned)
        except Exception as exc:
            self.fail(exc)

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """Where to seek each partition: the next offset to deliver."""
        return {p: self.position[p] for p in partitions if p in self.position}

    async def deliver_records(self, records: Sequence[Record]) -> None:
        """Hand records to the worker, a partition at a time; never raises."""
        by_partition: dict[int, list[Record]] = {}
        for record in records:
            by_partition.setdefault(record.partition, []).append(record)
        async with self._delivering:
            for partition, mine in by_partition.items():
                # Skip what is not ours (revoked, or not positioned yet) and what lies below
                # where the worker starts: records fetched before the seek.
                start = self.position.get(partition)
                fresh = [r for r in mine if start is not None and r.offset >= start]
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
            log.exception("%s: record %s/%s failed", self.name, partition, records[0].offset)
            try:
                await self.on_error(records[0], exc)
            except Exception as fatal:
                self.fail(fatal)
                return
        self.position[partition] = records[-1].offset + 1
