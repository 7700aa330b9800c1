"""/readyz answers anyone: when Postgres does not answer, it says so in general terms and
names no host, user, database or error text; the detail goes to the api's log."""

from __future__ import annotations

import logging
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


async def test_not_ready_names_no_database_detail(
    stack: Stack, pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = str(psycopg.conninfo.conninfo_to_dict(stack.settings.database_url)["dbname"])
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=30) as api:
        assert (await api.get("/readyz")).status_code == 200
        async with await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as admin:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'.encode())
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )
            try:
                with caplog.at_level(logging.WARNING, logger="api.app"):
                    r = await api.get("/readyz")
            finally:
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'.encode())
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "the database does not answer"
    assert database not in r.text and "connection" not in r.text.lower()
    logged = [m for m in caplog.messages if m.startswith("not ready: postgres: ")]
    assert logged and all(len(m) > len("not ready: postgres: ") for m in logged), caplog.messages
