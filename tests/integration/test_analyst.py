"""Invariant 6 for SQL: the analyst role sees one tenant's rows and cannot leave them.

A real (embedded) Postgres: migration 0007's role, grants and row-level security policies,
and `agentlog.analyst.run_sql`, which pins the tenant in a read-only transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from agentlog.analyst import AnalystError, run_sql
from eventstore import events as ev
from eventstore import store
from tests.services import create_database

pytestmark = pytest.mark.services

# Every table the analyst may read, and the view: all rows of a tenant, none of another's.
TENANT_TABLES = (
    "events",
    "sessions",
    "turns",
    "messages",
    "tool_calls",
    "approvals",
    "subagents",
    "effects",
    "tool_outputs",
    "model_calls",
)
# Never granted to the analyst.
PRIVATE_TABLES = (
    "api_tokens",
    "consumer_offsets",
    "dead_letters",
    "deleted_sessions",
    "schema_migrations",
    "analyst_logins",
)


async def _sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await store.connect(url) as conn:
        cur = await conn.execute(query.encode(), params or None)
        return await cur.fetchall() if cur.description else []


async def _seed(url: str, tenant: str) -> None:
    """One session of `tenant` with a row in every tenant table (two model calls)."""
    s = f"s-{tenant}"
    async with await store.connect(url) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO sessions (session_id, tenant_id, model, started_at, last_activity_at)"
            " VALUES (%s, %s, 'm', now(), now())",
            (s, tenant),
        )
        await conn.execute(
            "INSERT INTO turns (turn_id, session_id, tenant_id, status, idempotency_key, user_content,"
            " requested_at) VALUES (%s, %s, %s, 'completed', 'k', %s, now())",
            (f"t-{tenant}", s, tenant, Jsonb([{"type": "text", "text": "hi"}])),
        )
        for seq, role in ((1, "user"), (2, "assistant")):
            await conn.execute(
                "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role, content,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now())",
                (uuid.uuid4(), s, tenant, f"t-{tenant}", seq, role, Jsonb([{"type": "text", "text": role}])),
            )
        await conn.execute(
            "INSERT INTO tool_calls (tool_use_id, session_id, tenant_id, turn_id, step, name, input, status,"
            " requested_at) VALUES ('tu1', %s, %s, %s, 1, 'Bash', %s, 'ok', now())",
            (s, tenant, f"t-{tenant}", Jsonb({"command": "ls"})),
        )
        await conn.execute(
            "INSERT INTO approvals (approval_id, session_id, tenant_id, tool_use_id, name, input, status,"
            " requested_at) VALUES (%s, %s, %s, 'tu1', 'Bash', %s, 'pending', now())",
            (f"a-{tenant}", s, tenant, Jsonb({})),
        )
        await conn.execute(
            "INSERT INTO subagents (parent_session_id, tool_use_id, attempt, child_session_id, tenant_id,"
            " prompt, depth, status, requested_at) VALUES (%s, 'tu2', 1, %s, %s, 'p', 1, 'running', now())",
            (s, f"{s}-child", tenant),
        )
        await conn.execute(
            "INSERT INTO effects (effect_key, session_id, tenant_id, kind, request_event_id, outcome)"
            " VALUES (%s, %s, %s, 'model', %s, %s)",
            (f"model/{s}/t/1", s, tenant, uuid.uuid4(), Jsonb({})),
        )
        await conn.execute(
            "INSERT INTO tool_outputs (sha256, session_id, tenant_id, tool_use_id, content, chars)"
            " VALUES ('x', %s, %s, 'tu1', 'out', 3)",
            (s, tenant),
        )
        for seq, type_ in enumerate(("session_started", "assistant_message", "assistant_message"), 1):
            payload = {"model": "m", "usage": {"input_tokens": 10, "output_tokens": 5}, "cost_usd": "0.5"}
            await conn.execute(
                "INSERT INTO events (event_id, session_id, seq, tenant_id, type, turn_id, step, occurred_at,"
                " schema_version, payload, log_epoch, log_partition, log_offset)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, now(), 1, %s, 'e', 0, %s)",
                (uuid.uuid4(), s, seq, tenant, type_, f"t-{tenant}", seq, Jsonb(payload), seq),
            )
        await conn.execute(
            "INSERT INTO api_tokens (token_sha256, tenant_id) VALUES (%s, %s)", (f"sha-{tenant}", tenant)
        )
        await conn.execute(
            "INSERT INTO consumer_offsets (consumer, log_epoch, topic, log_partition, next_offset)"
            " VALUES (%s, 'e', 'events', 0, 1)",
            (f"c-{tenant}",),
        )


@pytest.fixture
async def db(pg_server: str) -> AsyncIterator[str]:
    """A migrated database with tenants A and B, as the server's superuser."""
    url = create_database(pg_server)
    await store.migrate(url)
    await _seed(url, "A")
    await _seed(url, "B")
    yield url


async def _tenants_of(url: str, table: str, tenant: str | None) -> list[str]:
    columns, rows = await run_sql(url, f"SELECT tenant_id FROM {table}", tenant)
    assert columns == ["tenant_id"]
    return sorted(r[0] for r in rows)


async def test_an_analyst_sees_its_tenant_in_every_table_and_the_view(db: str) -> None:
    counts = {t: (await _sql(db, f"SELECT count(*) FROM {t}"))[0][0] for t in TENANT_TABLES}
    assert counts["model_calls"] == 4 and all(n >= 2 for n in counts.values())
    for table in TENANT_TABLES:
        for tenant in ("A", "B"):
            seen = await _tenants_of(db, table, tenant)
            assert seen == [tenant] * (counts[table] // 2), (table, tenant)
        assert await _tenants_of(db, table, "C") == [], table
    # Aggregates, joins and the view's derived columns see the same rows.
    columns, rows = await run_sql(
        db,
        "SELECT s.tenant_id, count(*), sum(c.input_tokens), sum(c.cost_usd)"
        " FROM model_calls c JOIN sessions s USING (session_id) GROUP BY 1",
        "A",
    )
    assert columns == ["tenant_id", "count", "sum", "sum"]
    assert [(t, n, tokens, float(cost)) for t, n, tokens, cost in rows] == [("A", 2, 20, 1.0)]


async def test_without_a_tenant_the_analyst_role_sees_nothing(db: str) -> None:
    async with await store.connect(db) as conn:
        for setting in (None, ""):
            async with conn.transaction(force_rollback=True):
                if setting is not None:
                    await conn.execute("SET LOCAL app.tenant_id = ''")
                await conn.execute("SET LOCAL ROLE agentlog_analyst")
                for table in TENANT_TABLES:
                    cur = await conn.execute(f"SELECT count(*) FROM {table}".encode())
                    assert await cur.fetchone() == (0,), (table, setting)


async def test_without_a_tenant_run_sql_is_the_operators_view(db: str) -> None:
    for table in TENANT_TABLES:
        total = (await _sql(db, f"SELECT count(*) FROM {table}"))[0][0]
        assert await _tenants_of(db, table, None) == ["A"] * (total // 2) + ["B"] * (total // 2)
    # The operator reads the private tables too, still read-only.
    _, rows = await run_sql(db, "SELECT tenant_id FROM api_tokens ORDER BY 1", None)
    assert rows == [("A",), ("B",)]
    with pytest.raises(AnalystError, match="read-only"):
        await run_sql(db, "SELECT * FROM sessions FOR UPDATE", None)
    with pytest.raises(AnalystError, match="one query at a time"):
        await run_sql(db, "SELECT 1; DELETE FROM sessions", None)
    assert (await _sql(db, "SELECT count(*) FROM sessions"))[0][0] == 2


async def test_the_superuser_still_sees_and_writes_everything(db: str) -> None:
    for table in TENANT_TABLES:
        rows = await _sql(db, f"SELECT DISTINCT tenant_id FROM {table} ORDER BY 1")
        assert rows == [("A",), ("B",)], table
    await _sql(db, "UPDATE sessions SET turn_count = turn_count + 1")
    await _sql(db, "DELETE FROM tool_outputs WHERE tenant_id = 'B'")
    assert await _sql(db, "SELECT tenant_id, turn_count FROM sessions ORDER BY 1") == [("A", 1), ("B", 1)]


@pytest.mark.parametrize("table", PRIVATE_TABLES)
async def test_the_analyst_cannot_read_the_private_tables(db: str, table: str) -> None:
    with pytest.raises(AnalystError, match=f"permission denied for table {table}"):
        await run_sql(db, f"SELECT * FROM {table}", "A")


async def test_the_analyst_has_no_right_to_write(db: str) -> None:
    # Outside run_sql's read-only transaction too: the role holds SELECT only.
    async with await store.connect(db) as conn:
        for statement in (
            "INSERT INTO sessions (session_id, tenant_id, started_at, last_activity_at)"
            " VALUES ('x', 'A', now(), now())",
            "UPDATE sessions SET model = 'x' WHERE tenant_id = 'A'",
            "DELETE FROM events WHERE tenant_id = 'A'",
            "TRUNCATE turns",
            "INSERT INTO api_tokens (token_sha256, tenant_id) VALUES ('x', 'A')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with conn.transaction():
                    await conn.execute("SET LOCAL app.tenant_id = 'A'")
                    await conn.execute("SET LOCAL ROLE agentlog_analyst")
                    await conn.execute(statement.encode())
    assert (await _sql(db, "SELECT count(*) FROM sessions WHERE model = 'm'"))[0][0] == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # A script: a second statement is refused by the server, not run.
        ("SELECT 1; SET app.tenant_id = 'B'; SELECT tenant_id FROM sessions", "one query at a time"),
        ("SELECT 1; RESET ROLE; SELECT * FROM api_tokens", "one query at a time"),
        ("SELECT 1; COMMIT; SELECT * FROM api_tokens", "one query at a time"),
        # Only a query: no SET, RESET, DO, COMMIT or data change, even alone.
        ("SET app.tenant_id = 'B'", "only a query is allowed"),
        ("RESET ROLE", "only a query is allowed"),
        ("SET SESSION AUTHORIZATION DEFAULT", "only a query is allowed"),
        ("DO $$ BEGIN RESET ROLE; END $$", "only a query is allowed"),
        ("COMMIT", "only a query is allowed"),
        ("DELETE FROM sessions", "only a query is allowed"),
        ("WITH d AS (DELETE FROM sessions RETURNING 1) SELECT * FROM d", "data-modifying"),
        ("SELECT * FROM sessions FOR UPDATE", "read-only"),
        # A setting changed from inside the statement: set_config() is not the analyst's.
        ("SELECT set_config('app.tenant_id', 'B', true), tenant_id FROM sessions", "permission denied"),
        (
            "WITH s AS MATERIALIZED (SELECT set_config('app.tenant_id', 'B', true))"
            " SELECT tenant_id FROM s, sessions",
            "permission denied for function set_config",
        ),
        # Back to the connecting superuser mid-statement, then a function that runs SQL.
        (
            "WITH r AS MATERIALIZED (SELECT set_config('role', 'none', true))"
            " SELECT w.word FROM r, ts_stat('SELECT to_tsvector(token_sha256) FROM api_tokens') w",
            "permission denied for function set_config",
        ),
        ("SELECT pg_catalog.set_config('transaction_read_only', 'off', true)", "permission denied"),
    ],
)
async def test_a_query_cannot_leave_its_tenant(db: str, query: str, message: str) -> None:
    with pytest.raises(AnalystError, match=message):
        await run_sql(db, query, "A")
    assert await _tenants_of(db, "sessions", "A") == ["A"]
    assert (await _sql(db, "SELECT count(*) FROM sessions"))[0][0] == 2


async def test_what_the_query_runs_under(db: str) -> None:
    columns, rows = await run_sql(
        db,
        "SELECT current_user, current_setting('app.tenant_id'), current_setting('transaction_read_only'),"
        " current_setting('statement_timeout'), analyst_tenant() AS tenant",
        "A",
        timeout_s=12,
    )
    assert columns == ["current_user", "current_setting", "current_setting", "current_setting", "tenant"]
    assert rows == [("agentlog_analyst", "A", "on", "12s", "A")]
    # A tenant id is a value, never SQL.
    assert await _tenants_of(db, "sessions", "A' OR true --") == []


async def test_errors_carry_the_database_message(db: str) -> None:
    with pytest.raises(AnalystError, match='column "nope" does not exist'):
        await run_sql(db, "SELECT nope FROM sessions", "A")
    with pytest.raises(AnalystError, match="syntax error"):
        await run_sql(db, "SELEKT 1", None)
    with pytest.raises(AnalystError, match="statement timeout"):
        await run_sql(db, "SELECT pg_sleep(5)", "A", timeout_s=0.2)
    with pytest.raises(AnalystError, match="empty"):
        await run_sql(db, "SELECT 1", "")
    assert await run_sql(db, "SELECT 1 AS one;", "A") == (["one"], [(1,)])
    # Text with % is sent as is (no client-side placeholders).
    _, rows = await run_sql(db, "SELECT session_id FROM sessions WHERE session_id LIKE 's-%'", "B")
    assert rows == [("s-B",)]


async def test_an_analysts_own_login_is_pinned_by_analyst_logins(db: str) -> None:
    alice, bob = (f"{n}_{uuid.uuid4().hex[:8]}" for n in ("alice", "bob"))
    async with await store.connect(db) as conn:
        for name in (alice, bob):
            await conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE agentlog_analyst").format(sql.Identifier(name))
            )
        await conn.execute("INSERT INTO analyst_logins (role_name, tenant_id) VALUES (%s, 'A')", (alice,))
    try:
        url = make_conninfo(db, user=alice)
        async with await store.connect(url) as conn:

            async def tenants() -> list[str]:
                cur = await conn.execute("SELECT DISTINCT tenant_id FROM events")
                return [r[0] for r in await cur.fetchall()]

            assert await tenants() == ["A"]
            # Her own settings and temporary tables do not move her.
            await conn.execute("SET app.tenant_id = 'B'")
            assert await tenants() == ["A"]
            await conn.execute("CREATE TEMP TABLE analyst_logins (role_name text, tenant_id text)")
            await conn.execute("INSERT INTO pg_temp.analyst_logins VALUES (session_user, 'B')")
            assert await tenants() == ["A"]
            await conn.execute("DROP TABLE pg_temp.analyst_logins")  # so that her role can be dropped
            for private in ("public.analyst_logins", "api_tokens"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await conn.execute(f"SELECT * FROM {private}".encode())
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT set_config('role', 'none', false)")
        # run_sql through her login: her row decides, whatever tenant is asked.
        assert await _tenants_of(url, "sessions", "B") == ["A"]
        assert await _tenants_of(url, "sessions", None) == ["A"]
        # A login without a row sees nothing.
        assert await _tenants_of(make_conninfo(db, user=bob), "sessions", None) == []
    finally:
        async with await store.connect(db) as conn:
            for name in (alice, bob):
                await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


async def test_migrating_more_databases_on_the_same_server(db: str, pg_server: str) -> None:
    # The role exists and the first database granted it things; again, and concurrently.
    urls = [create_database(pg_server) for _ in range(3)]
    applied = await asyncio.gather(*(store.migrate(u) for u in urls))
    assert all("0007_analyst.sql" in names for names in applied)
    assert await store.migrate(db) == []
    await _seed(urls[0], "C")
    assert await _tenants_of(urls[0], "model_calls", "C") == ["C", "C"]
    assert await _tenants_of(db, "model_calls", "C") == []


async def test_a_non_superuser_owner_projects_rebuilds_and_deletes_under_forced_rls(pg_server: str) -> None:
    """Production may own the tables with a plain role: FORCE ROW LEVEL SECURITY applies to it,
    and its own permissive policy keeps every right (TRUNCATE is not subject to RLS)."""
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    name = f"o_{uuid.uuid4().hex[:12]}"
    async with await store.connect(pg_server) as conn:
        await conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        await conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))
        )
    superuser_url = make_conninfo(pg_server, dbname=name)
    url = make_conninfo(superuser_url, user=owner)
    try:
        assert "0007_analyst.sql" in await store.migrate(url)
        started = [ev.session_started(f"s{t}", model="m", tenant_id=t) for t in "AB"]
        said = [ev.user_message(f"s{t}", text="hi", idempotency_key="k", tenant_id=t) for t in "AB"]
        deleted = ev.SessionDeleted(
            event_id=uuid.uuid4(),
            session_id="sB",
            tenant_id="B",
            occurred_at=ev.now(),
            payload=ev.SessionDeletedPayload(),
        )

        async def project(events: Sequence[ev.Event]) -> None:
            async with await store.connect(url) as conn:
                for offset, event in enumerate(events):
                    async with conn.transaction():
                        assert await store.project_event(conn, event, "e", 0, offset)

        await project([*started, *said])
        assert await _sql(url, "SELECT tenant_id, status FROM sessions ORDER BY 1") == [
            ("A", "running"),
            ("B", "running"),
        ]
        async with await store.connect(url) as conn, conn.transaction():
            await store.drop_derived(conn)
        assert await _sql(url, "SELECT count(*) FROM events") == [(0,)]
        await project([*started, *said, deleted])
        assert await _sql(url, "SELECT tenant_id FROM sessions") == [("A",)]
        assert await _sql(url, "SELECT DISTINCT tenant_id FROM turns") == [("A",)]
        assert await _tenants_of(url, "events", None) == ["A", "A"]

        # Only a superuser can take set_config() away from PUBLIC (and make the owner a member
        # of a role it did not create): until then a tenant's query is refused, not run.
        with pytest.raises(AnalystError, match=r"REVOKE EXECUTE ON FUNCTION pg_catalog\.set_config"):
            await run_sql(url, "SELECT tenant_id FROM sessions", "A")
        async with await store.connect(superuser_url) as conn:
            await conn.execute(
                "REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC"
            )
            await conn.execute(sql.SQL("GRANT agentlog_analyst TO {}").format(sql.Identifier(owner)))
        assert await _tenants_of(url, "sessions", "A") == ["A"]
        assert await _tenants_of(url, "sessions", "B") == []
        assert await _tenants_of(url, "sessions", None) == ["A"]
    finally:
        async with await store.connect(pg_server) as conn:
            await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))
