"""The projector in a consumer group (AGENTLOG_CONSUMER_GROUPS): replicas share the partitions,
one that leaves hands them to the other, and the projection is the log's, once each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from tests.services import Stack, stack_on, wait_until

PARTITIONS = 4


async def _append_sessions(stack: Stack, prefix: str, count: int) -> int:
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    try:
        batch: list[ev.Event] = []
        for i in range(count):
            sid = f"{prefix}{i}"
            batch += [
                ev.session_started(sid, model=OFFLINE_MODEL),
                ev.user_message(sid, text=f"hello {i}", idempotency_key="k"),
            ]
        await kafka.append_many(batch)
        return len(batch)
    finally:
        await kafka.stop()


def _owned(stack: Stack, name: str) -> set[int]:
    worker: Any = stack.workers.get(name)
    group = getattr(worker, "group", None)
    return set(group.assignment) if group is not None else set()


async def _split(stack: Stack) -> bool:
    one, two = _owned(stack, "p1"), _owned(stack, "p2")
    return bool(one and two and not one & two and one | two == set(range(PARTITIONS)))


async def _all_with(stack: Stack) -> bool:
    return _owned(stack, "p2") == set(range(PARTITIONS))


async def _projected(stack: Stack, events: int, sessions: int) -> bool:
    rows = await stack.sql("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM sessions)")
    return rows == [(events, sessions)]


async def test_projector_replicas_share_the_partitions_and_one_takes_over(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=PARTITIONS, consumer_groups=True) as stack:
        await stack.start("projector", name="p1")
        await stack.start("projector", name="p2")
        await wait_until(lambda: _split(stack), within=60)
        first = await _append_sessions(stack, "a", 30)
        await wait_until(lambda: _projected(stack, first, 30), within=60)

        await stack.stop_role("p1")  # it hands its partitions back as it leaves
        await wait_until(lambda: _all_with(stack), within=60)
        second = await _append_sessions(stack, "b", 30)
        await wait_until(lambda: _projected(stack, first + second, 60), within=60)
        # Once each: every session has its one pending turn, nothing counted twice.
        assert await stack.sql("SELECT count(*) FROM sessions WHERE pending_turns <> 1") == [(0,)]
