"""A role's consumer group: one faust-streaming app whose id is the group, handing this replica's
partitions to the worker from the worker's offsets (faust's side is in `groups.faustapp`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiokafka
from faust.types import Message

from eventstore.codec import EVENTS_TOPIC
from eventstore.log import FetchPace
from eventstore.settings import Settings
from processors.groups.delivery import Delivery, OnAssigned, OnError, OnRecords, OnRevoked, Record
from processors.groups.faustapp import GroupApp


def instance_id(settings: Settings, group: str) -> str | None:
    """The static member id of this replica in `group`, or None for a dynamic member."""
    if not settings.kafka_static_membership:
        return None
    return f"{group}.{settings.instance}"


class GroupConsumer(Delivery):
    """One worker role's membership of its consumer group (see `Delivery` for the callbacks).

    Records come one at a time, or with `batch` > 1 up to that many, gathered for at most
    `batch_window_s`. Each rebalance revokes every partition and assigns anew.
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
        super().__init__(
            group, on_assigned=on_assigned, on_revoked=on_revoked, on_records=on_records, on_error=on_error
        )
        if batch < 1 or batch_window_s <= 0:
            raise ValueError("batch must be at least 1 and batch_window_s positive")
        self.settings = settings
        self.group = group
        self.batch = batch
        self.batch_window_s = batch_window_s
        self._app: GroupApp | None = None
        self.pace = FetchPace(settings)

    @property
    def kafka_consumer(self) -> aiokafka.AIOKafkaConsumer | None:
        """The aiokafka consumer under faust, for inspection (None when not started)."""
        return None if self._app is None else self._app.kafka_consumer()

    def highwaters(self) -> dict[int, int]:
        consumer = self.kafka_consumer
        if consumer is None:
            return {}
        found = {p: consumer.highwater(aiokafka.TopicPartition(EVENTS_TOPIC, p)) for p in self.position}
        return {p: end for p, end in found.items() if end is not None}

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
            failing = asyncio.ensure_future(self._app.wait_first(self.failed.wait()))
            pacing = asyncio.ensure_future(self._pacing())
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            failing.cancel()
            pacing.cancel()
            if not stop.is_set() and self.failure is None:
                self.fail(self._app.crash_reason or RuntimeError("faust stopped on its own"))
        finally:
            await self.stop()
        self.raise_failure()

    async def deliver(self, messages: list[Message]) -> None:
        """Called by faust's agent; never raises (faust would ack and drop the records silently)."""
        self.pace.saw(len(messages), self.kafka_consumer)
        await self.deliver_records([_record(m) for m in messages])

    async def _pacing(self) -> None:
        """Lengthen the fetch wait once no record came for a while (`FetchPace`); records
        arriving shorten it again, in `deliver`."""
        while True:
            await asyncio.sleep(1.0)
            self.pace.saw(0, self.kafka_consumer)


def _headers(headers: object) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers as pairs (faust types them as a list of pairs or a mapping)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    assert isinstance(pairs, Iterable)
    return tuple((str(k), bytes(v)) for k, v in pairs)


def _record(message: Message) -> Record:
    return Record(
        message.partition,
        message.offset,
        message.key,
        message.value,
        _headers(message.headers),
        None if message.timestamp is None else int(message.timestamp * 1000),
    )
