"""A folding worker loads what it needs, when it needs it: a restart reads from the stored
positions (not the whole log), an old session's state comes from Postgres on its next event,
and the cache stays within its bounds while every turn still sees its whole history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from eventstore import codec, log, store
from eventstore.state import fold
from processors.folding import start_positions
from tests.fakes import anthropic as fake
from tests.services import Stack, stack_on, wait_until

SESSIONS = 12


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server,
        log_dir,
        anthropic_base_url=claude.base_url,
        anthropic_api_key="test-key",
        partitions=2,
        session_cache_sessions=3,  # far fewer than the sessions: states must come and go
    ) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start_api()
        yield stack


async def _turn(stack: Stack, sid: str, text: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post(f"/v1/sessions/{sid}/messages", params={"wait": 30}, json={"content": text})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["status"] == "completed", body
        return body


def _user_texts(request: dict[str, Any]) -> list[str]:
    texts = []
    for message in request["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [b["text"] for b in content if b.get("type") == "text"]
    return texts


async def test_states_load_on_demand_within_bounds_and_a_restart_reads_no_history(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.default = fake.text("noted")
    for i in range(SESSIONS):
        await _turn(stack, f"s{i}", f"first words of s{i}")
    reactor = stack.workers["reactor"]
    model = stack.workers["model"]
    for worker in (reactor, model):
        # Bounded: a state goes once all it folded is projected, so the cache may run over
        # its limit for a moment, never for long.
        await wait_until(lambda w=worker: _within_bounds(w))
        assert worker.cache.evictions > 0, worker.consumer

    # The second turn of every session: evicted states come back from Postgres, whole.
    for i in range(SESSIONS):
        await _turn(stack, f"s{i}", f"second words of s{i}")
    for i in range(SESSIONS):
        request = next(r for r in claude.requests if _user_texts(r)[-1] == f"second words of s{i}")
        assert _user_texts(request) == [f"first words of s{i}", f"second words of s{i}"]

    # A restart reads from where the projector and the worker left the log, not from 0.
    await wait_until(lambda: _caught_up(stack))
    await stack.stop_role("reactor")
    projected = await stack.sql(
        "SELECT log_partition, next_offset FROM consumer_offsets WHERE consumer = 'projector'"
    )
    await stack.start("reactor")
    await wait_until(lambda: _started(stack))
    restarted = stack.workers["reactor"]
    await wait_until(lambda: _is_caught_up(restarted))
    assert restarted.cache.loads == 0 and not restarted.cache.states  # no history folded
    assert all(restarted.start_offsets[p] >= o for p, o in projected)
    # ... and an old session's next turn loads its state, with every earlier message.
    await _turn(stack, "s0", "third words of s0")
    assert _user_texts(claude.requests[-1]) == [
        "first words of s0",
        "second words of s0",
        "third words of s0",
    ]
    assert restarted.cache.loads >= 1
    # Invariant 1: a state loaded from Postgres and folded on from the log is the state the
    # whole history folds to.
    await wait_until(lambda: _caught_up(stack))
    async with await store.connect(stack.settings.database_url) as conn:
        whole = fold("s0", await store.session_events(conn, "s0"))
    assert restarted.cache.peek("s0") == whole


async def _within_bounds(worker: Any) -> bool:
    return len(worker.cache.states) <= 3


async def _started(stack: Stack) -> bool:
    return "reactor" in stack.workers


async def _is_caught_up(worker: Any) -> bool:
    return bool(worker.caught_up)


async def _caught_up(stack: Stack) -> bool:
    """Whether the projector and the reactor have read the log to its end."""
    rows = await stack.sql(
        "SELECT consumer, sum(next_offset) FROM consumer_offsets"
        " WHERE consumer IN ('projector', 'reactor') GROUP BY 1"
    )
    got = dict(rows)
    total = await _log_end(stack)
    return got.get("projector") == total and got.get("reactor") == total


async def _log_end(stack: Stack) -> int:
    reader = log.PartitionReader(stack.settings)
    await reader.start()
    try:
        return sum((await reader.end_offsets()).values())
    finally:
        await reader.stop()


async def test_topics_are_created_keeping_everything(stack: Stack) -> None:
    for topic in (codec.EVENTS_TOPIC, codec.DEAD_LETTER_TOPIC):
        config = await log.topic_config(stack.settings, topic)
        assert config["retention.ms"] == "-1" and config["retention.bytes"] == "-1", config


def test_a_worker_starts_at_the_earlier_of_its_offset_and_the_projectors_never_before_the_log() -> None:
    start, lost = start_positions([0, 1, 2, 3], {0: 50, 1: 10, 3: 40}, {0: 30, 1: 20, 2: 5, 3: 40}, {3: 45})
    assert start == {0: 30, 1: 10, 2: 0, 3: 45}
    # Partition 3: retention took 40..44, which the projector never wrote: lost, and said so.
    assert lost == {0: 0, 1: 0, 2: 0, 3: 5}
    start, lost = start_positions([0], {0: 100}, {0: 100}, {0: 60})
    assert start == {0: 100} and lost == {0: 0}  # what retention took is in Postgres


async def test_a_topic_deleted_and_made_again_is_a_new_log(stack: Stack, claude: fake.FakeAnthropic) -> None:
    claude.default = fake.text("noted")
    await _turn(stack, "kept", "before the topic went")
    await wait_until(lambda: _caught_up(stack))
    before = await log.log_epoch(stack.settings)
    for role in ("reactor", "model", "projector"):
        await stack.stop_role(role)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([codec.EVENTS_TOPIC])
    finally:
        await admin.close()
    await log.ensure_topics(stack.settings)
    after = await log.log_epoch(stack.settings)
    cluster = before.split("/")[0]
    assert after != before and after.startswith(cluster + "/")  # same cluster, another log
    # The old offsets (of a longer log) are never applied to the new one: every new record
    # is projected, and the old session goes on with its whole history.
    await stack.start("projector", "reactor", "model")
    await _turn(stack, "kept", "after the topic came back")
    assert _user_texts(claude.requests[-1]) == ["before the topic went", "after the topic came back"]
    epochs = await stack.sql("SELECT log_epoch, count(*) FROM events WHERE session_id = 'kept' GROUP BY 1")
    assert dict(epochs).keys() == {before, after}
