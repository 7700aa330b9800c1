"""A transaction in one round trip: BEGIN, the statements and COMMIT sent as one pipeline.

psycopg's `transaction()` inside a pipeline syncs as it begins and again before it commits
(it nests pipelines), so `pipeline(), transaction()` costs four round trips however few
statements it holds. `transaction` here writes BEGIN and COMMIT as statements of the
pipeline instead: statements whose results are read after the block (cursors kept, fetched
once it ended) take one round trip in all; a result read inside the block costs one more.
For autocommit connections (`store.connect`, the api's pool) outside a transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import pq


def active(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether `conn` is in a pipeline now."""
    return conn.pgconn.pipeline_status != pq.PipelineStatus.OFF


@asynccontextmanager
async def transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """BEGIN … COMMIT in a pipeline on `conn`; rolled back if the block raises or a statement
    fails (a failed statement skips the rest of the pipeline, COMMIT included). Inside a
    transaction already (`agentlog rebuild` applies batches in one of its own), or on a
    connection that is not autocommit: psycopg's `transaction()` (a savepoint when nested)."""
    if not conn.autocommit or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        async with conn.transaction():
            yield
        return
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await conn.rollback()
        raise
