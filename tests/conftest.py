"""Session-wide fixtures: one embedded Postgres server for the whole test run (the testing
kit's, `agentlog.testing.plugin`, which users' tests share)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import anthropic as fake


@pytest.fixture(scope="session")
def pg_server(agentlog_postgres: str) -> str:
    """The URI of the embedded Postgres server (its `postgres` database)."""
    return agentlog_postgres


@pytest.fixture(scope="session")
def log_dir(agentlog_logs: Path) -> Path:
    return agentlog_logs


@pytest.fixture
def claude() -> Iterator[fake.FakeAnthropic]:
    """The fake Anthropic Messages API on loopback, one per test."""
    with fake.FakeAnthropic() as server:
        yield server
