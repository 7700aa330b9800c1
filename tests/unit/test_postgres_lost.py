"""Which failures pause a worker in place (Postgres went away) and which still stop it."""

from __future__ import annotations

import psycopg
from psycopg import errors

from processors.groups import GroupStopped
from processors.run import postgres_lost


def _chained(cause: BaseException) -> RuntimeError:
    """As a worker reports it: its callback's error under GroupStopped under RuntimeError."""
    try:
        try:
            raise GroupStopped("model-worker: stopped") from cause
        except GroupStopped as stopped:
            raise RuntimeError("model-worker stopped") from stopped
    except RuntimeError as exc:
        return exc


def test_a_lost_connection_anywhere_in_the_chain_pauses() -> None:
    closed = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    assert postgres_lost(_chained(closed)) == (
        "OperationalError: consuming input failed: server closed the connection unexpectedly"
    )
    assert postgres_lost(_chained(errors.AdminShutdown("terminating connection"))) is not None
    assert postgres_lost(_chained(errors.ConnectionFailure("no"))) is not None


def test_a_failing_query_or_another_error_still_stops() -> None:
    assert (
        postgres_lost(_chained(errors.QueryCanceled("canceling statement due to statement timeout"))) is None
    )
    assert postgres_lost(_chained(ValueError("a bug"))) is None
    assert postgres_lost(RuntimeError("no cause")) is None
