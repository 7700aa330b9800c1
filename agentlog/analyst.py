"""`agentlog sql`: one read-only query, as one tenant's analyst or as the operator.

With a tenant, the query runs in a transaction that the application opens and pins before
handing over: `app.tenant_id` set to the tenant, a statement timeout, read-only, then
`SET LOCAL ROLE agentlog_analyst`, whose row-level security policies (migration 0007) show
that tenant's rows only. The query itself cannot undo any of that:

- it is one query, never a script: it is sent as `DECLARE ... CURSOR FOR <query>` through
  the extended protocol, so the server refuses a second statement (`; RESET ROLE; ...`)
  and anything but a SELECT (VALUES, TABLE, WITH) — no SET, DO, COMMIT or data change;
- it cannot change a setting from inside (`set_config('role', ...)` or
  `set_config('app.tenant_id', ...)`): the migration revokes set_config() from PUBLIC, and
  this module refuses a tenant's query while the analyst role may still call it;
- it cannot write: the transaction is read-only (before any query of the caller's, so it
  cannot be made read-write again) and the role holds SELECT only.

Without a tenant, the same single read-only query runs as the connecting user.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from eventstore import store

ANALYST_ROLE = "agentlog_analyst"
CURSOR = "agentlog_sql"
DEFAULT_TIMEOUT_S = 30.0


class AnalystError(Exception):
    """The query was refused or failed; the message is the database's."""


async def run_sql(
    database_url: str, query: str, tenant: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query; return its column names and rows.

    With `tenant`, as agentlog_analyst seeing that tenant's rows only; without, as the
    connecting user (an operator's view of every tenant)."""
    if tenant is not None and not tenant:
        raise AnalystError("the tenant is empty")
    try:
        async with await store.connect(database_url) as conn:
            async with conn.transaction(force_rollback=True):
                await conn.execute("SET TRANSACTION READ ONLY")
                await conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(
                        sql.Literal(f"{int(timeout_s * 1000)}")
                    )
                )
                if tenant is not None:
                    await _become_analyst(conn, tenant)
                # One statement, a query only (see the module's docstring).
                await conn.execute(f"DECLARE {CURSOR} NO SCROLL CURSOR FOR {query}".encode(), prepare=True)
                cur = await conn.execute(f"FETCH ALL FROM {CURSOR}".encode())
                columns = [c.name for c in cur.description or []]
                rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise AnalystError(_message(exc)) from None
    return columns, rows


async def _become_analyst(conn: store.AsyncConn, tenant: str) -> None:
    """Pin the tenant, then switch to the analyst role (inside the caller's transaction)."""
    cur = await conn.execute(
        "SELECT r.rolsuper OR r.rolbypassrls,"
        " has_function_privilege(r.oid, 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE')"
        " FROM pg_roles r WHERE r.rolname = %s",
        (ANALYST_ROLE,),
    )
    row = await cur.fetchone()
    if row is None:
        raise AnalystError(f"role {ANALYST_ROLE} does not exist: run the migrations (agentlog migrate)")
    bypasses, can_set_config = row
    if bypasses:
        raise AnalystError(f"role {ANALYST_ROLE} is a superuser or bypasses row-level security")
    if can_set_config:
        raise AnalystError(
            f"role {ANALYST_ROLE} may call set_config() and so leave its tenant; as a superuser, in this"
            " database: REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC"
        )
    # SET rather than set_config(): the application needs no right on set_config().
    await conn.execute(sql.SQL("SET LOCAL app.tenant_id = {}").format(sql.Literal(tenant)))
    await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(ANALYST_ROLE)))


def _message(exc: psycopg.Error) -> str:
    """The server's message (with its hint), without the wrapper's LINE context."""
    diag = exc.diag
    primary = diag.message_primary
    if primary is None:
        return str(exc).strip() or type(exc).__name__
    if "multiple commands" in primary:
        primary = f"one query at a time ({primary})"
    elif diag.sqlstate == "42601" and primary.startswith("syntax error"):
        primary = f"{primary} (only a query is allowed: SELECT, WITH, VALUES or TABLE)"
    return f"{primary} (hint: {diag.message_hint})" if diag.message_hint else primary
