"""Tenants cannot reach each other through the api (issue 16, holes 4 and 5): session ids are
per tenant (two tenants may use one id, and nothing tells one of the other's), the api's
database role is bound by row-level security (a query that forgot its WHERE still sees one
tenant), and the service token starts sub-agents for their parent's tenant and does nothing
else. Through the real api, workers, broker and Postgres."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import scope
from eventstore import ids
from tests.services import Stack, create_database, stack_on, wait_until

pytestmark = pytest.mark.services

TOKENS = {"acme": "tok-acme", "globex": "tok-globex"}
SERVICE = "svc-tenancy"


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    tokens = ",".join(f"{token}:{tenant}" for tenant, token in TOKENS.items())
    async with stack_on(
        pg_server, log_dir, auth_required=True, api_tokens=tokens, service_token=SERVICE
    ) as stack:
        await stack.start("projector", "reactor", "model", "subagents")
        await stack.start_api()
        yield stack


def client(stack: Stack, tenant: str) -> httpx.AsyncClient:
    token = TOKENS.get(tenant, tenant)  # a tenant's name, or a token itself
    return httpx.AsyncClient(
        base_url=stack.api_url or "", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def the_api(stack: Stack) -> FastAPI:
    """The running api (the app the test kit serves)."""
    app = stack._server.config.app
    assert isinstance(app, FastAPI)
    return app


def api_pool(stack: Stack) -> Any:
    """The running api's own connection pool."""
    return the_api(stack).state.pool


async def said(api: httpx.AsyncClient, sid: str) -> list[Any]:
    view = (await api.get(f"/v1/sessions/{sid}")).json()
    return [m["content"] for m in view["messages"] if m["role"] == "user"]


async def test_two_tenants_use_one_id_and_each_sees_only_its_own(stack: Stack) -> None:
    async with client(stack, "acme") as acme, client(stack, "globex") as globex:
        for api, tenant in ((acme, "acme"), (globex, "globex")):
            made = await api.post("/v1/sessions", json={"session_id": "shared", "metadata": {"t": tenant}})
            assert made.status_code == 201, made.text
            assert made.json()["id"] == "shared" and made.headers["location"] == "/v1/sessions/shared"
            done = await api.post(
                "/v1/sessions/shared/messages", params={"wait": 30}, json={"content": f"I am {tenant}"}
            )
            assert done.status_code == 200 and done.json()["session_id"] == "shared", done.text
        for api, tenant in ((acme, "acme"), (globex, "globex")):
            assert await said(api, "shared") == [[{"type": "text", "text": f"I am {tenant}"}]]
            view = (await api.get("/v1/sessions/shared")).json()
            assert view["metadata"]["user_metadata"] == {"t": tenant}
            turns = (await api.get("/v1/sessions/shared/turns")).json()["data"]
            assert len(turns) == 1
            events = (await api.get("/v1/sessions/shared/events")).json()["data"]
            assert {e["tenant_id"] for e in events} == {tenant} and {e["session_id"] for e in events} == {
                "shared"
            }
            listed = (await api.get("/v1/sessions")).json()
            assert [s["id"] for s in listed["data"]] == ["shared"] and listed["last_id"] == "shared"
            # A fork to an id the other tenant holds is a fork like any other.
            fork = await api.post("/v1/sessions/shared/fork", json={"session_id": "forked"})
            assert fork.status_code == 201 and fork.json()["metadata"]["forked_from"] == "shared", fork.text
        longest = "l" * 200  # the longest id a client may choose, however long its tenant's name
        assert (await acme.post("/v1/sessions", json={"session_id": longest})).status_code == 201
        stored = await stack.sql("SELECT session_id, tenant_id FROM sessions ORDER BY 1")
        assert ("acme~shared", "acme") in stored and ("globex~shared", "globex") in stored
        # Deleting one tenant's leaves the other's.
        assert (await acme.delete("/v1/sessions/shared")).status_code == 202

        async def gone() -> bool:
            return (await acme.get("/v1/sessions/shared")).status_code == 404

        await wait_until(gone)
        assert await said(globex, "shared") == [[{"type": "text", "text": "I am globex"}]]


def _comparable(r: httpx.Response, probed: str, fresh: str) -> tuple[int, str]:
    """A response with the id it names made neutral, and ids the server made up dropped."""
    text = r.text.replace(probed, "ID").replace(fresh, "ID")
    try:
        body = json.loads(text)
    except ValueError:
        return r.status_code, text
    if isinstance(body, dict):
        for made_up in ("turn_id", "idempotency_key"):
            body.pop(made_up, None)
        body.get("metadata", {}).pop("started_at", None)
        body.get("metadata", {}).pop("last_activity_at", None)
    return r.status_code, json.dumps(body, sort_keys=True)


async def test_probing_another_tenants_ids_answers_as_for_an_unused_id(stack: Stack) -> None:
    async with client(stack, "acme") as acme, client(stack, "globex") as globex:
        assert (await globex.post("/v1/sessions", json={"session_id": "g-private"})).status_code == 201
        done = await globex.post(
            "/v1/sessions/g-private/messages", params={"wait": 30}, json={"content": "x"}
        )
        assert done.status_code == 200
        turn = done.json()["turn_id"]
        probes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "/v1/sessions/{id}", None),
            ("GET", "/v1/sessions/{id}/events", None),
            ("GET", "/v1/sessions/{id}/turns", None),
            ("GET", f"/v1/sessions/{{id}}/turns/{turn}", None),
            ("GET", "/v1/sessions/{id}/tool_calls", None),
            ("GET", "/v1/sessions/{id}/approvals", None),
            ("POST", "/v1/sessions/{id}/approvals/ap-1", {"decision": "approve"}),
            ("GET", "/v1/sessions/{id}/events/stream", None),
            ("POST", "/v1/sessions/{id}/fork", {"session_id": "{id}-fork"}),
            ("DELETE", "/v1/sessions/{id}", None),
            ("POST", "/v1/sessions", {"session_id": "{id}"}),
            ("POST", "/v1/sessions/{id}/messages", {"content": "hello"}),
        ]
        for n, (method, path, body) in enumerate(probes):
            fresh = f"never-used-{n}"
            answers = []
            for sid in ("g-private", fresh):
                sent = json.loads(json.dumps(body).replace("{id}", sid)) if body is not None else None
                r = await acme.request(method, path.replace("{id}", sid), json=sent)
                answers.append(_comparable(r, "g-private", fresh))
            assert answers[0] == answers[1], (method, path, answers)
        # Nothing acme did reached globex's session.
        assert await said(globex, "g-private") == [[{"type": "text", "text": "x"}]]
        assert (await globex.get("/v1/sessions/g-private")).status_code == 200


async def test_a_run_id_cannot_be_squatted_by_another_tenant(stack: Stack) -> None:
    key = "run-key-1"
    # The id acme's run takes, as acme's client sees it: globex makes a session of it first.
    squatted = "run-" + str(ids.derive(f"agent/run/acme/{key}"))
    async with client(stack, "acme") as acme, client(stack, "globex") as globex:
        assert (await globex.post("/v1/sessions", json={"session_id": squatted})).status_code == 201
        r = await acme.post(
            "/v1/agent/run", json={"prompt": "mine alone", "timeout_s": 30}, headers={"Idempotency-Key": key}
        )
        assert r.status_code == 200 and r.json()["session_id"] == squatted, r.text
        assert "mine alone" in r.json()["output_text"]
        assert await said(globex, squatted) == []


async def test_the_api_role_is_bound_by_row_level_security(stack: Stack) -> None:
    async with client(stack, "acme") as acme, client(stack, "globex") as globex:
        for api, sid in ((acme, "rls-a"), (globex, "rls-g")):
            assert (await api.post("/v1/sessions", json={"session_id": sid})).status_code == 201

    async def both() -> bool:
        return len(await stack.sql("SELECT 1 FROM sessions WHERE session_id LIKE '%rls-%'")) == 2

    await wait_until(both)
    pool = api_pool(stack)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_user, r.rolsuper, r.rolbypassrls,"
            " (SELECT count(*) FROM pg_tables t WHERE t.tableowner = current_user)"
            " FROM pg_roles r WHERE r.rolname = current_user"
        )
        assert await cur.fetchone() == ("agentlog_api", False, False, 0)
        # No tenant set: no tenant's rows at all.
        cur = await conn.execute("SELECT count(*) FROM sessions")
        assert await cur.fetchone() == (0,)
    # A query that forgot its WHERE sees the transaction's tenant only, in every table it reads.
    for table in ("sessions", "events", "turns", "messages", "deleted_sessions", "effects", "approvals"):
        async with scope.connection(pool, "acme") as conn:
            cur = await conn.execute(f"SELECT DISTINCT tenant_id FROM {table}".encode())
            assert {row[0] for row in await cur.fetchall()} <= {"acme"}, table
    async with scope.connection(pool, "acme") as conn:
        cur = await conn.execute("SELECT session_id FROM sessions WHERE session_id LIKE '%rls-%'")
        assert await cur.fetchall() == [("acme~rls-a",)]
    # And it can neither write a tenant table nor read the tables it has no use for.
    async with pool.connection() as conn:
        for statement in (
            "DELETE FROM sessions",
            "UPDATE approvals SET status = 'approved'",
            "SELECT * FROM consumer_offsets",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(statement.encode())


async def test_an_owner_login_acts_as_the_api_role(stack: Stack) -> None:
    """Given the owner's (here a superuser's) credentials, the api's connections switch role."""
    async with AsyncConnectionPool(
        stack.settings.database_url,
        min_size=1,
        max_size=1,
        open=False,
        configure=scope.configure,
        kwargs={"autocommit": True},
    ) as pool:
        async with scope.connection(pool, "nobody-here") as conn:
            cur = await conn.execute("SELECT current_user, (SELECT count(*) FROM sessions)")
            assert await cur.fetchone() == ("agentlog_api", 0)


async def test_an_unmigrated_database_gives_the_api_no_connection(pg_server: str) -> None:
    """Else a connection made before the migrations would stay the owner's after them."""
    pool = AsyncConnectionPool(
        create_database(pg_server),
        min_size=1,
        open=False,
        configure=scope.configure,
        kwargs={"autocommit": True},
    )
    with pytest.raises(PoolTimeout):
        await pool.open(wait=True, timeout=1)
    await pool.close()


def _routes(stack: Stack) -> list[tuple[str, str]]:
    """Every /v1 operation of the running api (as its OpenAPI document lists them), with its
    path parameters filled in."""
    found = []
    for path, operations in the_api(stack).openapi()["paths"].items():
        if path.startswith("/v1/"):
            filled = path.replace("{session_id}", "s").replace("{turn_id}", "t").replace("{approval_id}", "a")
            found += [(method.upper(), filled) for method in operations]
    return found


async def test_the_service_token_only_starts_sub_agents_for_the_parents_tenant(stack: Stack) -> None:
    routes = _routes(stack)
    assert ("POST", "/v1/subagent/run") in routes and len(routes) > 10
    async with client(stack, SERVICE) as service, client(stack, "acme") as acme:
        for method, path in routes:
            if path == "/v1/subagent/run":
                continue
            r = await service.request(method, path, headers={"X-Agentlog-Tenant": "acme"})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        # Without a parent it has no tenant to act for.
        r = await service.post("/v1/subagent/run", json={"prompt": "orphan"})
        assert r.status_code == 403 and r.json()["field"] == "parent_session_id"
        r = await service.post("/v1/subagent/run", json={"prompt": "x", "parent_session_id": "acme~nope"})
        assert r.status_code == 422 and r.json()["field"] == "parent_session_id"
        # With a parent: the child is the parent's tenant's, whatever the caller claims.
        done = await acme.post(
            "/v1/sessions/svc-parent/messages", params={"wait": 30}, json={"content": "hi"}
        )
        assert done.status_code == 200
        r = await service.post(
            "/v1/subagent/run",
            json={"prompt": "a child", "parent_session_id": "acme~svc-parent", "timeout_s": 30},
            headers={"X-Agentlog-Tenant": "globex", "Idempotency-Key": "svc-child"},
        )
        assert r.status_code == 200 and r.json()["status"] == "completed", r.text
        child = await stack.sql(
            "SELECT session_id, tenant_id, parent_session_id FROM sessions WHERE parent_session_id = %s",
            "acme~svc-parent",
        )
        assert [(c[1], c[2]) for c in child] == [("acme", "acme~svc-parent")]
        assert child[0][0].startswith("acme~http-")
        # acme reads its child by the id it was given; the service token reads nothing.
        assert (await acme.get(f"/v1/sessions/{r.json()['session_id']}")).status_code == 200
        # A tenant names its own parents only: another's, or a stored id, are unknown parents.
        async with client(stack, "globex") as globex:
            for parent in ("svc-parent", "acme~svc-parent"):
                r = await globex.post("/v1/subagent/run", json={"prompt": "x", "parent_session_id": parent})
                assert r.status_code == 422 and r.json()["field"] == "parent_session_id", r.text


async def test_a_queued_sub_agent_is_its_parents_tenants_under_the_id_it_shows(stack: Stack) -> None:
    task = "call Task " + json.dumps({"description": "a sub-task", "prompt": "Say child."})
    async with client(stack, "acme") as acme, client(stack, "globex") as globex:
        done = await acme.post("/v1/sessions/q-parent/messages", params={"wait": 60}, json={"content": task})
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text
        calls = (await acme.get("/v1/sessions/q-parent/tool_calls")).json()["data"]
        child = calls[0]["subagents"][0]["child_session_id"]
        assert child.startswith("sub-")
        view = await acme.get(f"/v1/sessions/{child}")
        assert view.status_code == 200 and view.json()["metadata"]["parent_session_id"] == "q-parent"
        assert (await globex.get(f"/v1/sessions/{child}")).status_code == 404
        stored = await stack.sql("SELECT tenant_id FROM sessions WHERE session_id = %s", f"acme~{child}")
        assert stored == [("acme",)]
