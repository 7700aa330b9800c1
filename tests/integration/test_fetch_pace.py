"""Idle consumers fetch with a long wait, busy ones with a short one (`log.FetchPace`): on the
real embedded broker, through aiokafka's fetcher (a private attribute of the locked version:
this test fails when an upgrade moves it)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventstore import events as ev
from eventstore import log
from eventstore.models import OFFLINE_MODEL
from tests.services import Stack, stack_on


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir) as s:
        await log.ensure_topics(s.settings)
        yield s


async def test_an_idle_reader_waits_longer_per_fetch_and_still_gets_the_next_record(stack: Stack) -> None:
    reader = log.PartitionReader(stack.settings)
    await reader.start()
    kafka = log.KafkaLog(stack.settings)
    await kafka.start()
    try:
        fetcher = reader.consumer._fetcher
        pace = reader.pace
        assert pace.busy_ms == stack.settings.kafka_fetch_max_wait_ms < pace.idle_ms
        assert fetcher._fetch_max_wait_ms == pace.busy_ms
        batches = reader.batches(max_records=10, timeout_ms=50)
        while await anext(batches):  # what the log holds already (its epoch marker)
            pass
        pace.last_records = time.monotonic() - pace.IDLE_AFTER_S  # quiet for as long as it takes
        while await anext(batches):
            pass
        assert fetcher._fetch_max_wait_ms == pace.idle_ms
        # The first record after the quiet spell arrives, and the wait is short again.
        await kafka.append(ev.session_started("paced", model=OFFLINE_MODEL))
        got: list[object] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = await anext(batches)
        assert got, "the record never came"
        assert fetcher._fetch_max_wait_ms == pace.busy_ms
    finally:
        await kafka.stop()
        await reader.stop()
