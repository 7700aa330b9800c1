"""Every partition assigned by hand, no group: the same callbacks as `GroupConsumer` for the one
process that owns the whole log (the embedded stack, tests), without a join that costs ≥5 s on Tansu.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from eventstore.log import PartitionReader
from eventstore.settings import Settings
from processors.groups.delivery import Delivery, OnAssigned, OnError, OnRecords, OnRevoked, Record


class ManualConsumer(Delivery):
    """All partitions of the topic, from the offsets `on_assigned` returns; see `Delivery`."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        on_assigned: OnAssigned,
        on_revoked: OnRevoked,
        on_records: OnRecords,
        on_error: OnError,
        batch: int = 1,
    ) -> None:
        super().__init__(
            name, on_assigned=on_assigned, on_revoked=on_revoked, on_records=on_records, on_error=on_error
        )
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = batch
        self.reader = PartitionReader(settings)
        self._started = False

    async def start(self) -> None:
        """Assign every partition, ask the worker where each starts, seek there."""
        partitions = {tp.partition for tp in await self.reader.start()}
        self._started = True
        await self.assigned(partitions, generation=0)
        self.reader.seek(self.positions(partitions))

    def highwaters(self) -> dict[int, int]:
        return self.reader.highwaters() if self._started else {}

    async def stop(self) -> None:
        """Hand everything back (`on_revoked`), then disconnect."""
        if not self._started:
            return
        self._started = False
        try:
            await self.revoked(set(self.position))
        finally:
            await self.reader.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, consume until `stop` is set, stop; raises `GroupStopped` if a callback failed."""
        try:
            await self.start()
            batches = self.reader.batches(max_records=self.batch, timeout_ms=100)
            while not stop.is_set() and self.failure is None:
                await self.deliver_records([_record(r) for r in await anext(batches)])
        finally:
            await self.stop()
        self.raise_failure()


def _record(record: ConsumerRecord[bytes, bytes]) -> Record:
    return Record(
        record.partition,
        record.offset,
        record.key,
        record.value,
        tuple((str(k), bytes(v)) for k, v in record.headers),
        record.timestamp,
    )
