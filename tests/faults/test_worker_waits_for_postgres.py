"""A worker started while its database is down waits for it, retrying with a backoff and
saying so, instead of exiting (and being restarted, and exiting again): it starts once
Postgres answers, and a stop while it waits ends it cleanly."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from eventstore.settings import Settings
from processors.run import run_role, wait_for_postgres

pytestmark = pytest.mark.services


async def test_a_worker_waits_for_a_database_that_does_not_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}"  # no server has a socket there
    settings = Settings(database_url=nowhere, kafka_bootstrap="127.0.0.1:9")
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="processors.run"):
        worker = asyncio.create_task(run_role("projector", settings, stop))
        await asyncio.sleep(1.5)
        assert not worker.done(), worker.exception()
        stop.set()
        await asyncio.wait_for(worker, 5)
    tries = [m for m in caplog.messages if m.startswith("postgres does not answer")]
    assert len(tries) >= 3 and tries[0].endswith("trying again in 0.2s"), caplog.messages


async def test_waiting_ends_as_soon_as_the_database_answers(pg_server: str) -> None:
    assert await asyncio.wait_for(wait_for_postgres(pg_server, asyncio.Event()), 10)
