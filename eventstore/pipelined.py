"""A transaction in one round trip: BEGIN, the statements and COMMIT sent as one pipeline.

psycopg's `transaction()` inside a pipeline syncs as it begins and again before it commits
(it nests pipelines), so `pipeline(), transaction()` costs four round trips however few
statements it holds. `transaction` here writes BEGIN and COMMIT as statements of the
pipeline instead: statements whose results are read after the block (cursors kept, fetched
once it ended) take one round trip in all; a result read inside the block costs one more.
For autocommit connections (`store.connect`, the api's pool): one that is not already has
a transaction of psycopg's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import pq


@asynccontextmanager
async def transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """BEGIN … COMMIT in a pipeline on `conn` (autocommit); rolled back if the block raises or
    a statement fails (a failed statement skips the rest of the pipeline, COMMIT included)."""
    if not conn.autocommit:
        raise ValueError("pipelined.transaction needs an autocommit connection")
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            yield
            await conn.execute("COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await conn.rollback()
        raise
