"""Session-wide fixtures: one embedded Postgres server for the whole test run (the testing
kit's, `agentlog.testing.plugin`, which users' tests share)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_server(agentlog_postgres: str) -> str:
    """The URI of the embedded Postgres server (its `postgres` database)."""
    return agentlog_postgres


@pytest.fixture(scope="session")
def log_dir(agentlog_logs: Path) -> Path:
    return agentlog_logs
