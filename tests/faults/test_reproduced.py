"""Records re-produced and reordered (issue 17): the log's contract is a session's order within
its partition; anything else may change. A producer that retries re-appends an event (the
same id) after others; a stale copy may come long after its turn ended; sessions sharing a
partition interleave in any order. None of it changes what a session is, costs a model call
or runs a tool again, or changes a projected row (invariants 1, 3, 4 and 8).

Two harnesses: the golden log rearranged and folded and projected (pure and Postgres), and
finished sessions' records appended again to a running stack's log, duplicated, interleaved
across sessions and stale.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from eventstore import codec, store
from eventstore import log as kafka_log
from eventstore.models import CLAUDE_DEFAULT
from processors.tools.registry import Echo, EffectClass, Registry, ToolContext, ToolOutput
from tests.fakes import anthropic as fake
from tests.golden import replay
from tests.golden.record import records as read_records
from tests.services import Stack, create_database, snapshot, stack_on, wait_until

GOLDEN = Path(__file__).parent.parent / "golden" / "v1.jsonl"
Record = dict[str, Any]


def rearranged(records: list[Record], rng: random.Random) -> list[Record]:
    """The records with every session's order kept and nothing else: sessions interleaved at
    random, each record now and then re-appended later (a retried append), and some of each
    session's records appended again at the very end (stale copies, after its turns ended).
    Markers stay first, as a log starts with its own."""
    markers = [r for r in records if codec.is_marker(replay.headers(r))]
    queues: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r not in markers:
            queues[r["key"]].append(r)
    out: list[Record] = []
    while any(queues.values()):
        queue = rng.choice([q for q in queues.values() if q])
        record = queue.pop(0)
        out.append(record)
        if rng.random() < 0.3:  # a retried append: a copy lands later, after others
            queue.insert(rng.randint(0, len(queue)), record)
    stale = [r for q in _by_key(records).values() for r in rng.sample(q, k=min(3, len(q)))]
    return markers + out + stale


def _by_key(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if not codec.is_marker(replay.headers(r)):
            out[r["key"]].append(r)
    return out


def _in_one_partition(records: list[Record]) -> list[Record]:
    """The records as one partition's, offsets in their new order."""
    return [{**r, "partition": 0, "offset": n} for n, r in enumerate(records)]


@pytest.mark.parametrize("seed", range(20))
def test_a_rearranged_log_folds_to_the_same_sessions(seed: int) -> None:
    records = replay.load(GOLDEN)
    again = rearranged(records, random.Random(seed))
    assert len(again) > len(records)
    assert replay.summaries(again) == replay.summaries(records)


async def test_a_rearranged_log_projects_to_the_same_rows(pg_server: str) -> None:
    records = replay.load(GOLDEN)
    expected = create_database(pg_server)
    await store.migrate(expected)
    await replay.project(expected, records)
    for seed in range(3):
        database_url = create_database(pg_server)
        await store.migrate(database_url)
        await replay.project(database_url, _in_one_partition(rearranged(records, random.Random(seed))))
        assert await replay.rows(database_url) == await replay.rows(expected)


class Counted:
    """A tool that counts its runs: a second run is a repeated effect."""

    name = "Counted"
    description = "Counts."
    input_schema: dict[str, Any] = {"type": "object", "properties": {}}  # noqa: RUF012
    runs = 0

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "write"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        Counted.runs += 1
        return ToolOutput(f"run {Counted.runs}")


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server, log_dir, partitions=2, anthropic_base_url=claude.base_url, anthropic_api_key="test-key"
    ) as stack:
        await stack.start_everything(tools=Registry([Echo(), Counted()]))
        yield stack


async def _caught_up(stack: Stack) -> bool:
    """Whether every consumer stored an offset at the log's end in every partition."""
    _, ends = await kafka_log.bounds(stack.settings, range(stack.settings.partitions))
    rows = await stack.sql("SELECT consumer, log_partition, next_offset FROM consumer_offsets")
    consumers = {c for c, _, _ in rows}
    stored = {(c, p): o for c, p, o in rows}
    return len(consumers) >= 4 and all(
        stored.get((c, p), 0) >= end for c in consumers for p, end in ends.items() if end
    )


async def test_records_appended_again_reordered_and_stale_run_nothing_again(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    sessions = [f"s{n}" for n in range(4)]  # on two partitions: some share one
    for sid in sessions:
        claude.script(fake.tool_use(("Counted", {})), fake.text(f"done {sid}"))
        turn = await stack.turn(sid, "count", model=CLAUDE_DEFAULT, tools=["Counted"])
        assert turn["status"] == "completed", turn
    await wait_until(lambda: _caught_up(stack), within=30)
    calls, runs, rows = claude.calls, Counted.runs, await snapshot(stack)
    assert (calls, runs) == (8, 4)
    # Every session's records appended again, rearranged as above, in their partitions.
    again = rearranged([r for r in await read_records(stack) if r["key"] in sessions], random.Random(7))
    producer = AIOKafkaProducer(**kafka_log.producer_config(stack.settings))
    await producer.start()
    try:
        for r in again:
            await producer.send_and_wait(
                codec.EVENTS_TOPIC,
                r["value"].encode(),
                key=r["key"].encode(),
                headers=replay.headers(r),
            )
    finally:
        await producer.stop()
    await wait_until(lambda: _caught_up(stack), within=30)
    assert (claude.calls, Counted.runs) == (calls, runs)
    assert await snapshot(stack) == rows
