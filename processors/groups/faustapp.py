"""The faust-streaming glue of a consumer group: our aiokafka options, our offsets, no Kafka commits.

Every subclass of faust's and every untyped corner of it is here; `GroupConsumer` sees `Hooks`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol

import aiokafka
import faust
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from faust.app.base import BootStrategy
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT, Message

from eventstore import codec
from eventstore.log import consumer_config
from eventstore.settings import Settings


class Hooks(Protocol):
    """What the faust side calls back into (implemented by `GroupConsumer`)."""

    async def assigned(self, partitions: set[int], generation: int) -> None: ...

    async def revoked(self, partitions: set[int]) -> None: ...

    def positions(self, partitions: Iterable[int]) -> dict[int, int]: ...

    async def deliver(self, messages: list[Message]) -> None: ...


def request_timeout_ms(settings: Settings) -> int:
    """aiokafka's default (40 s), or longer: a JoinGroup may be held for the rebalance timeout."""
    return max(40_000, settings.kafka_session_timeout_ms + 5_000, settings.kafka_rebalance_timeout_ms + 5_000)


def group_options(settings: Settings, group: str, instance_id: str | None) -> dict[str, Any]:
    """The aiokafka options of a group member: `consumer_config` plus the group's timeouts."""
    return {
        **consumer_config(settings),
        "group_id": group,
        # Static membership: a restarted member with the same id gets its partitions back
        # without a rebalance, if it returns within the session timeout.
        "group_instance_id": instance_id,
        # aiokafka 0.14 has no cooperative-sticky assignor: every rebalance revokes everything.
        "partition_assignment_strategy": [RoundRobinPartitionAssignor],
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "rebalance_timeout_ms": settings.kafka_rebalance_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "request_timeout_ms": request_timeout_ms(settings),
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
    }


class GroupConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread with our options (trap 1: its hard-coded `fetch_max_wait_ms=1500`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # We never commit to Kafka, so faust's "has not committed since start" livelock
        # warning would fire on every healthy partition; the stream-idle checks stay.
        self.tp_commit_timeout_secs = math.inf

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        app = self.app
        assert isinstance(app, GroupApp)
        # The assignor faust would pick without tables; kept so faust's assignment code agrees.
        self._assignor = RoundRobinPartitionAssignor
        return aiokafka.AIOKafkaConsumer(**group_options(app.settings, app.conf.id, app.instance_id))


class GroupFaustConsumer(faust_aiokafka.Consumer):
    """faust's consumer with our offsets: seeks go to `Hooks.positions`, commits go nowhere."""

    _thread: GroupConsumerThread

    def _new_consumer_thread(self) -> GroupConsumerThread:
        return GroupConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def hooks(self) -> Hooks:
        app = self.app
        assert isinstance(app, GroupApp)
        return app.hooks

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Never: offsets live in Postgres per log epoch; a Kafka commit would be a second truth
        (and one a new log epoch would inherit through the group's name)."""
        return False

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # The one way from faust's commit paths to Kafka, closed too should one bypass commit().
        return False

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to the position our callbacks keep, not Kafka's.

        faust calls this after each assignment and whenever a fetch returns while its flow is
        stopped; Kafka's committed offsets (none: we never commit) would mean the beginning.
        """
        assignment = self.assignment()
        positions = self.hooks.positions(tp.partition for tp in assignment)
        wanted = {tp: positions[tp.partition] for tp in assignment if tp.partition in positions}
        if wanted:
            await self._thread.seek_wait(wanted)
        return wanted

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """faust stops its streams and waits for records in flight; then the worker saves."""
        await super().on_partitions_revoked(revoked)
        if revoked:
            await self.hooks.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """The worker says where each partition starts before faust seeks and resumes its flow."""
        if assigned:
            await self.hooks.assigned({tp.partition for tp in assigned}, generation_id)
        await super().on_partitions_assigned(assigned, generation_id)


class GroupTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with our consumer."""

    Consumer: ClassVar[type[ConsumerT]] = GroupFaustConsumer


class GroupBoot(BootStrategy):
    """No web server and no faust producer: workers append through `eventstore.log.KafkaLog`."""

    enable_web = False
    enable_kafka_producer = False


class GroupApp(faust.App):
    """One role's faust app; its id is the consumer group."""

    BootStrategy = GroupBoot

    def __init__(self, settings: Settings, group: str, hooks: Hooks, instance_id: str | None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.instance_id = instance_id
        super().__init__(
            group,
            broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
            autodiscover=False,
            web_enabled=False,
            # Topics are ours (eventstore.log.ensure_topics); faust's leader topic is unused.
            topic_allow_declare=False,
            topic_disable_leader=True,
            broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
            broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
            broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
            # faust refuses a session timeout above its request timeout.
            broker_request_timeout=request_timeout_ms(settings) / 1000,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=True,
        )

    def _create_directories(self) -> None:
        # faust's directories are for its tables; a group has none, so nothing goes on disk.
        pass

    def _new_transport(self) -> GroupTransport:
        return GroupTransport(self.conf.broker_consumer, self)

    def kafka_consumer(self) -> aiokafka.AIOKafkaConsumer | None:
        """The aiokafka consumer faust runs in its consumer thread (None before start)."""
        consumer = self.consumer
        assert isinstance(consumer, GroupFaustConsumer)
        return consumer._thread._consumer

    def subscribe(self, batch: int, window_s: float) -> None:
        """One agent, one instance: records of a partition reach `Hooks.deliver` in offset order,
        up to `batch` at a time, waiting at most `window_s` to fill a batch."""
        topic = self.topic(
            codec.EVENTS_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

        # faust acks an event when the body asks for the next one, or when the body raises
        # (faust-streaming/faust#315): `deliver` never raises, see GroupConsumer.deliver.
        deliver = self.hooks.deliver

        async def one_at_a_time(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                await deliver([event.message])

        async def batches(stream: faust.StreamT[bytes]) -> None:
            assert isinstance(stream, faust.Stream)  # take_events is not on faust's StreamT
            async for events in stream.take_events(batch, within=window_s):
                await deliver([event.message for event in events])

        body = one_at_a_time if batch == 1 else batches
        self.agent(topic, name=f"{self.conf.id}.deliver", concurrency=1)(body)
