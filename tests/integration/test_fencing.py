"""Fencing (issue 13, invariant 10) against a real Postgres: once another replica has claimed a
partition, the replica that lost it can no longer save an offset, record an effect or start
one for it; a model call's lease keeps a second replica from calling until it runs out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from eventstore import events as ev
from eventstore import ledger, owners, store
from eventstore.codec import EVENTS_TOPIC
from eventstore.owners import Fence, Fenced
from tests.services import create_database

EPOCH = "cluster/marker"


@pytest.fixture
async def url(pg_server: str) -> str:
    database = create_database(pg_server)
    await store.migrate(database)
    return database


@pytest.fixture
async def conn(url: str) -> AsyncIterator[store.AsyncConn]:
    c = await store.connect(url)
    try:
        yield c
    finally:
        await c.close()


def _replicas(partitions: int = 4) -> tuple[Fence, Fence]:
    return Fence("model-worker", EPOCH, "a", partitions), Fence("model-worker", EPOCH, "b", partitions)


async def test_a_replica_that_lost_its_partition_cannot_save_an_offset(conn: store.AsyncConn) -> None:
    a, b = _replicas()
    assert await a.claim(conn, {0, 1}) == {0: 1, 1: 1}
    await a.save_offset(conn, EVENTS_TOPIC, 0, 10)
    assert await b.claim(conn, {0}) == {0: 2}  # a was paused past its session timeout
    with pytest.raises(Fenced, match="refused"):
        await a.save_offset(conn, EVENTS_TOPIC, 0, 12)
    await a.save_offset(conn, EVENTS_TOPIC, 1, 3)  # partition 1 is still a's
    await b.save_offset(conn, EVENTS_TOPIC, 0, 11)
    stored = await store.load_offsets(conn, "model-worker", EPOCH, EVENTS_TOPIC)
    assert stored == {0: 11, 1: 3}
    # A partition never claimed is refused too.
    with pytest.raises(Fenced):
        await a.save_offset(conn, EVENTS_TOPIC, 2, 1)


async def test_a_replica_back_from_a_stall_learns_it_lost_a_partition_before_acting(
    conn: store.AsyncConn,
) -> None:
    a, b = _replicas()
    await a.claim(conn, {2, 3})
    await a.raise_unless_owned(conn, {2, 3})  # still a's
    await b.claim(conn, {3})  # a stalled past its group's timeouts
    await a.raise_unless_owned(conn, {2})
    with pytest.raises(Fenced, match="partition 3 is owned by b"):
        await a.raise_unless_owned(conn, {2, 3})
    await b.raise_unless_owned(conn, {3})


async def test_offsets_of_many_partitions_are_saved_in_one_statement_and_fenced_each(
    conn: store.AsyncConn,
) -> None:
    a, b = _replicas()
    await a.claim(conn, {0, 1, 2})
    await a.save_offsets(conn, EVENTS_TOPIC, {0: 5, 1: 6, 2: 7})
    await b.claim(conn, {1})
    with pytest.raises(Fenced, match="9 of partition 1"):
        await a.save_offsets(conn, EVENTS_TOPIC, {0: 8, 1: 9, 2: 10})
    # What a still owns is saved; what it lost keeps its owner's offset.
    stored = await store.load_offsets(conn, "model-worker", EPOCH, EVENTS_TOPIC)
    assert stored == {0: 8, 1: 6, 2: 10}
    await a.save_offsets(conn, EVENTS_TOPIC, {0: 3})  # never backwards
    assert (await store.load_offsets(conn, "model-worker", EPOCH, EVENTS_TOPIC))[0] == 8


async def test_a_replica_that_lost_its_partition_cannot_record_or_start_an_effect(
    conn: store.AsyncConn,
) -> None:
    a, b = _replicas()
    request = ev.user_message("s1", text="hi", idempotency_key="k")
    outcome = ev.tool_result("s1", turn_id="t", step=1, tool_use_id="u", content="done", is_error=False)
    partition = a.partition("s1")
    await a.claim(conn, {partition})
    await b.claim(conn, {partition})
    with pytest.raises(Fenced, match="is owned by b"):
        await ledger.record(conn, "tool/s1/t/1/u", "tool", request, outcome, 1, a)
    with pytest.raises(Fenced):
        await ledger.start(conn, "tool/s1/t/1/u", "tool", request, {"class": "write"}, a)
    with pytest.raises(Fenced):
        await ledger.lease(conn, "model/s1/t/1", "model", request, "a", 10, a)
    assert await ledger.entry(conn, "tool/s1/t/1/u") is None  # nothing of a's got through
    assert await ledger.record(conn, "tool/s1/t/1/u", "tool", request, outcome, 1, b) == outcome


async def test_a_model_lease_keeps_a_second_caller_out_until_it_runs_out(conn: store.AsyncConn) -> None:
    request = ev.user_message("s2", text="hi", idempotency_key="k")
    key = "model/s2/t/1"
    assert await ledger.lease(conn, key, "model", request, "a", 0.5) is None  # a holds it
    held = await ledger.lease(conn, key, "model", request, "b", 0.5)
    assert held is not None and held.status == "started" and held.intent == {"owner": "a"}
    assert await ledger.lease(conn, key, "model", request, "a", 0.5) is None  # a again: its own
    assert await ledger.renew(conn, key, "a", 0.5)
    await asyncio.sleep(0.7)  # a paused: no renewal, the lease runs out
    assert await ledger.lease(conn, key, "model", request, "b", 10) is None  # b takes over
    assert not await ledger.renew(conn, key, "a", 0.5)  # a, resumed, learns it lost the call
    # Once recorded, a lease is never granted again: the outcome is re-emitted instead.
    answer = ev.tool_result("s2", turn_id="t", step=1, tool_use_id="u", content="x", is_error=False)
    await ledger.record(conn, key, "model", request, answer)
    done = await ledger.lease(conn, key, "model", request, "c", 10)
    assert done is not None and done.status == "done" and done.outcome == answer
    # A tool's start (a write whose outcome may be unknown) is no lease: never taken over.
    await ledger.start(conn, "tool/s2/t/1/w", "tool", request, {"class": "write"})
    assert (await ledger.lease(conn, "tool/s2/t/1/w", "model", request, "b", 10)) is not None


async def test_a_workspace_is_held_by_one_executor_at_a_time(conn: store.AsyncConn, url: str) -> None:
    other = await store.connect(url)  # another executor's connection
    try:
        async with owners.workspace(conn, "t", "s3", wait_s=1):
            with pytest.raises(owners.WorkspaceBusy, match="in use by another executor"):
                async with owners.workspace(other, "t", "s3", wait_s=0.2):
                    pass
            async with owners.workspace(other, "t", "s4", wait_s=0.2):  # another session: free
                pass
        async with owners.workspace(other, "t", "s3", wait_s=0.2):  # released: free again
            pass
    finally:
        await other.close()


async def test_a_write_postgres_refuses_leaves_the_ledger_connection_usable(conn: store.AsyncConn) -> None:
    """Each ledger write is one pipelined transaction: an outcome Postgres cannot store raises
    (the worker records a failure instead) and the same connection writes the next one."""
    a, _ = _replicas()
    await a.claim(conn, {a.partition("s3")})
    request = ev.user_message("s3", text="hi", idempotency_key="k")
    unstorable = ev.tool_result("s3", turn_id="t", step=1, tool_use_id="u", content="a\x00b", is_error=False)
    with pytest.raises(psycopg.DataError):
        await ledger.record(conn, "tool/s3/t/1/u", "tool", request, unstorable, 1, a)
    assert await ledger.entry(conn, "tool/s3/t/1/u") is None
    stored = ev.tool_result("s3", turn_id="t", step=1, tool_use_id="u", content="ab", is_error=False)
    assert await ledger.record(conn, "tool/s3/t/1/u", "tool", request, stored, 1, a) == stored
    # A deleted session's rows never come back, fenced or not.
    await conn.execute("INSERT INTO deleted_sessions VALUES ('s3', 'default', now())")
    with pytest.raises(ledger.SessionGone):
        await ledger.start(conn, "tool/s3/t/2/v", "tool", request, {"class": "write"}, a)
    assert await ledger.record(conn, "tool/s3/t/2/v", "tool", request, stored, 1, a) is None
    assert await ledger.entry(conn, "tool/s3/t/2/v") is None
