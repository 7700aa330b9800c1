"""The database roles agentlog's parts log in as: the api's own (migration 0015), which row-
level security binds, beside the owner's that the workers and migrations use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from eventstore import pipelined

API_ROLE = "agentlog_api"


def as_role(database_url: str, role: str = API_ROLE, password: str | None = None) -> str:
    """The same server and database, logged in as `role` (with `password`, if given, else none:
    for a server that trusts the connection, as the embedded one's Unix socket)."""
    params = conninfo_to_dict(database_url)
    params.pop("password", None)
    params["user"] = role
    if password is not None:
        params["password"] = password
    return make_conninfo("", **params)


@asynccontextmanager
async def acting_for(conn: psycopg.AsyncConnection[Any], tenant: str) -> AsyncIterator[None]:
    """A transaction on `conn` acting for `tenant` (`agentlog.tenant`, which row-level security
    reads), pipelined: BEGIN and the setting go out with the first statement, COMMIT with the
    last (eventstore/pipelined.py)."""
    async with pipelined.transaction(conn):
        # SET LOCAL takes no parameter; the tenant id is a checked id, quoted as a literal.
        await conn.execute(sql.SQL("SET LOCAL agentlog.tenant = {}").format(sql.Literal(tenant)))
        yield
