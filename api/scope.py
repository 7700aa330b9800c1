"""What the api reads, it reads as one tenant: a connection is a transaction with the tenant
set (`agentlog.tenant`), under which row-level security shows that tenant's rows and no
other's (migration 0015), whatever a query's WHERE says. Session ids cross this edge
translated: a client's id in, the stored (scoped, `eventstore.ids`) one inside, the client's
id again in every answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import sql
from psycopg.rows import RowFactory, tuple_row

from eventstore import ids, roles
from eventstore.errors import StoreError
from eventstore.store import AsyncConn

# Answer fields holding a session id, translated back to the client's id wherever they occur;
# the bodies a session recorded (content, payloads, inputs) are left as they were.
ID_FIELDS = frozenset(
    {"id", "session_id", "parent_session_id", "forked_from", "child_session_id", "first_id", "last_id"}
)
OPAQUE_FIELDS = frozenset(
    {"content", "payload", "input", "result", "user_content", "user_metadata", "messages"}
)


@asynccontextmanager
async def connection(pool: Any, tenant: str) -> AsyncIterator[AsyncConn]:
    """A pooled connection in a transaction acting for `tenant` (`roles.acting_for`)."""
    async with pool.connection() as conn, roles.acting_for(conn, tenant):
        yield conn


async def rows(
    pool: Any, tenant: str, query: str, params: Any = None, row_factory: RowFactory[Any] = tuple_row
) -> list[Any]:
    """One query's rows for `tenant` in one round trip (read once the transaction is sent:
    inside `connection`, reading them would cost another). For the api's hot reads."""
    async with pool.connection() as conn:
        async with roles.acting_for(conn, tenant):
            cur = conn.cursor(row_factory=row_factory)
            await cur.execute(query, params)
        found: list[Any] = await cur.fetchall()
        return found


async def configure(conn: AsyncConn) -> None:
    """Each new pool connection: one whose login bypasses row-level security (a superuser,
    BYPASSRLS, or the tables' owner) acts as agentlog_api from then on. A login of its own is
    better: an injected RESET ROLE would undo this (docs/operations.md)."""
    cur = await conn.execute(
        "SELECT r.rolsuper OR r.rolbypassrls OR pg_has_role(current_user, t.tableowner, 'USAGE')"
        " FROM pg_roles r, pg_tables t"
        " WHERE r.rolname = current_user AND t.schemaname = current_schema() AND t.tablename = 'sessions'"
    )
    row = await cur.fetchone()
    if row is None:
        # Not migrated yet: refused, or the connection would stay privileged once it is.
        raise StoreError("the database has no sessions table yet: run `agentlog migrate`")
    if row[0]:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(roles.API_ROLE)))


def client_ids(tenant: str, value: Any) -> Any:
    """An answer with every session id field as the tenant knows it."""
    if isinstance(value, list):
        return [client_ids(tenant, item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ID_FIELDS and isinstance(item, str):
            out[key] = ids.client_session_id(tenant, item)
        elif key in OPAQUE_FIELDS:
            out[key] = item
        else:
            out[key] = client_ids(tenant, item)
    return out
