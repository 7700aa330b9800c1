"""/readyz answers anyone: when Postgres does not answer, it says so in general terms and
names no host, user, database or error text; the detail goes to the api's log. While the
database is unreachable every api call answers 503 problem+json with `Retry-After` at once:
never a hang until the pool's timeout, never a plain-text 500."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.services import Stack, stack_on

pytestmark = pytest.mark.services


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start_api()
        yield stack


@contextlib.asynccontextmanager
async def unreachable(stack: Stack, pg_server: str) -> AsyncIterator[str]:
    """The stack's database refuses connections and every open one is cut, until the exit."""
    database = str(psycopg.conninfo.conninfo_to_dict(stack.settings.database_url)["dbname"])
    async with await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as admin:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'.encode())
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
        )
        try:
            yield database
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'.encode())


async def _until_not_ready(api: httpx.AsyncClient) -> httpx.Response:
    """/readyz once it notices (it caches its checks for about a second)."""
    for _ in range(100):
        r = await api.get("/readyz")
        if r.status_code != 200:
            break
        await asyncio.sleep(0.1)
    return r


async def test_not_ready_names_no_database_detail(
    stack: Stack, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=30) as api:
        assert (await api.get("/readyz")).status_code == 200
        async with unreachable(stack, pg_server) as database:
            with caplog.at_level(logging.WARNING, logger="api.app"):
                r = await _until_not_ready(api)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "the database does not answer" and r.headers["retry-after"] == "1"
    assert database not in r.text and "connection" not in r.text.lower()
    logged = [m for m in caplog.messages if m.startswith("not ready: postgres: ")]
    assert logged and all(len(m) > len("not ready: postgres: ") for m in logged), caplog.messages


async def test_calls_answer_503_with_retry_after_at_once_while_the_database_is_unreachable(
    stack: Stack, pg_server: str
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=30) as api:
        assert (await api.post("/v1/sessions/s-before/messages", json={"content": "hi"})).status_code == 202
        async with unreachable(stack, pg_server):
            answers = []
            for call in range(6):  # the first ones may meet a pooled connection just cut
                started = time.monotonic()
                if call % 2:
                    r = await api.post(f"/v1/sessions/s-down-{call}/messages", json={"content": "hi"})
                else:
                    r = await api.get("/v1/sessions/s-before/turns")
                answers.append((r.status_code, r.headers.get("content-type"), time.monotonic() - started))
                assert r.status_code == 503, r.text
                assert r.headers["content-type"].startswith("application/problem+json"), r.text
                assert r.headers["retry-after"] == "1" and "s-before" not in r.json()["detail"]
            assert all(took < 1.5 for *_, took in answers[2:]), answers
        # Back: the api answers again without a restart (no projector runs here: the session
        # is not found, which only a database that answers can say).
        deadline = time.monotonic() + 15
        while (r := await api.get("/v1/sessions/s-before/turns")).status_code == 503:
            assert time.monotonic() < deadline, r.text
            await asyncio.sleep(0.1)
        assert r.status_code == 404 and (await api.get("/readyz")).status_code == 200
