"""A transaction in one round trip (eventstore/pipelined.py), counted on the wire: the api's
reads and every ledger write use it, so a regression to psycopg's `pipeline(),
transaction()` (four round trips) shows here as Syncs, not as a slower benchmark."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import AsyncConnectionPool

from api import scope
from bench.synthetic import tool_session
from eventstore import codec, pipelined, store
from tests.services import create_database


@pytest.fixture
async def conn(pg_server: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as c:
        yield c


@pytest.fixture
async def table(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE TABLE {name} (x int PRIMARY KEY)")
    yield name
    await conn.execute(f"DROP TABLE {name}")


def _syncs(trace: Path) -> int:
    """Round trips: the Syncs the client sent (each waits for its ReadyForQuery)."""
    return sum(1 for line in trace.read_text().splitlines() if line.startswith("F") and "\tSync" in line)


def _round_trips(trace: Path) -> int:
    """Syncs and Flushes: each waits for what the server answers (a pipeline reads its
    results with a Flush before its Sync)."""
    return sum(
        1
        for line in trace.read_text().splitlines()
        if line.startswith("F") and ("\tSync" in line or "\tFlush" in line)
    )


def _traced(c: psycopg.AsyncConnection[Any], path: Path) -> Any:
    out = open(path, "w")  # closed by the caller
    c.pgconn.trace(out.fileno())
    c.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
    return out


async def test_statements_read_after_the_block_take_one_round_trip(
    conn: psycopg.AsyncConnection[Any], table: str, tmp_path: Path
) -> None:
    out = _traced(conn, tmp_path / "trace")
    try:
        async with pipelined.transaction(conn):
            await conn.execute("SET LOCAL application_name = 'pipelined'")
            await conn.execute(f"INSERT INTO {table} VALUES (1), (2)")
            cur = await conn.execute(f"SELECT sum(x), current_setting('application_name') FROM {table}")
        row = await cur.fetchone()
    finally:
        conn.pgconn.untrace()
        out.close()
    assert row == (3, "pipelined")
    assert _syncs(tmp_path / "trace") == 1
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    # Committed: another connection sees the rows.
    async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as other:
        assert await (await other.execute(f"SELECT count(*) FROM {table}")).fetchone() == (2,)


async def test_psycopgs_own_pipelined_transaction_takes_four(
    conn: psycopg.AsyncConnection[Any], tmp_path: Path
) -> None:
    """Why pipelined.py exists: if psycopg stops syncing around a nested transaction, this
    fails, and `pipeline(), transaction()` may do again."""
    out = _traced(conn, tmp_path / "trace")
    try:
        async with conn.pipeline(), conn.transaction():
            cur = await conn.execute("SELECT 1")
        await cur.fetchone()
    finally:
        conn.pgconn.untrace()
        out.close()
    assert _syncs(tmp_path / "trace") == 4


async def test_a_failed_statement_rolls_everything_back_and_leaves_the_connection_usable(
    conn: psycopg.AsyncConnection[Any], table: str
) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with pipelined.transaction(conn):
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone() == (0,)


async def test_a_block_that_raises_writes_nothing(conn: psycopg.AsyncConnection[Any], table: str) -> None:
    with pytest.raises(LookupError):
        async with pipelined.transaction(conn):
            await conn.execute(f"INSERT INTO {table} VALUES (7)")
            raise LookupError("the caller's own reason")
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone() == (0,)


async def test_inside_a_transaction_it_is_a_savepoint_that_commits_nothing_by_itself(
    conn: psycopg.AsyncConnection[Any], table: str
) -> None:
    # `agentlog rebuild` applies the projector's batches inside a transaction of its own: a
    # COMMIT sent from inside would end it early.
    with pytest.raises(psycopg.errors.DivisionByZero):
        async with conn.transaction():
            async with pipelined.transaction(conn):
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
            await conn.execute("SELECT 1/0")
    assert await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone() == (0,)
    async with conn.transaction():
        with pytest.raises(LookupError):
            async with pipelined.transaction(conn):
                await conn.execute(f"INSERT INTO {table} VALUES (2)")
                raise LookupError("rolled back to the savepoint only")
        await conn.execute(f"INSERT INTO {table} VALUES (3)")
    assert await (await conn.execute(f"SELECT x FROM {table}")).fetchall() == [(3,)]


async def test_on_a_connection_that_is_not_autocommit_it_is_psycopgs_transaction(
    pg_server: str, table: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_server) as c:
        async with pipelined.transaction(c):
            await c.execute(f"INSERT INTO {table} VALUES (5)")
        assert c.info.transaction_status == pq.TransactionStatus.IDLE
    async with await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as other:
        assert await (await other.execute(f"SELECT x FROM {table}")).fetchall() == [(5,)]


async def test_the_apis_one_query_read_acts_for_its_tenant_in_one_round_trip(
    pg_server: str, tmp_path: Path
) -> None:
    async with AsyncConnectionPool(pg_server, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        async with pool.connection() as c:
            out = _traced(c, tmp_path / "trace")
        try:
            first = await scope.rows(pool, "acme", "SELECT current_setting('agentlog.tenant')")
            second = await scope.rows(pool, "other", "SELECT current_setting('agentlog.tenant')")
        finally:
            async with pool.connection() as c:
                c.pgconn.untrace()
            out.close()
    assert (first, second) == ([("acme",)], [("other",)])
    assert _syncs(tmp_path / "trace") == 2


async def test_a_projector_batch_takes_three_round_trips_whatever_its_size(
    pg_server: str, tmp_path: Path
) -> None:
    """The offset and what the batch needs read together (one Flush), the rows, the
    announcements, the outbox and the offset written with the COMMIT (a Sync, and the Flush
    psycopg reads its results with): 17 before. States kept across batches, as the projector
    keeps them (a session not kept is loaded from Postgres: one more)."""
    url = create_database(pg_server)
    await store.migrate(url)
    events = tool_session("big", 20) + tool_session("small", 1)
    records = [store.Incoming(i, *codec.encode(e), e) for i, e in enumerate(events)]
    states: store.States = {}
    async with await store.connect(url) as c:
        for name, batch in (("first", records[:5]), ("rest", records[5:])):
            out = _traced(c, tmp_path / name)
            try:
                result = await store.apply_batch(
                    c, "projector", "e", codec.EVENTS_TOPIC, 0, batch, states=states
                )
            finally:
                c.pgconn.untrace()
                out.close()
            assert result.applied == len(batch)
            assert _round_trips(tmp_path / name) <= 3, name
        cur = await c.execute("SELECT count(*) FROM events")
        assert await cur.fetchone() == (len(events),)
