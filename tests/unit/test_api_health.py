"""The api's readiness: a refused database is down at once; a silent one after two slow checks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from api.health import SLOW_STRIKES, Health


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A listener that accepts and never answers: a database that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(port: int) -> Health:
    url = f"postgresql://u@127.0.0.1:{port}/db?connect_timeout=30"
    return Health(url, f"127.0.0.1:{port}", ttl=0, timeout=0.2, connect_timeout=0.2)


async def test_a_refused_database_reads_as_down_at_once() -> None:
    health = _health(_refused_port())
    try:
        known = await health.readiness()
        assert known.database is not None and not known.ready
    finally:
        await health.close()


async def test_a_silent_database_reads_as_down_only_when_slow_twice(silent_port: int) -> None:
    health = _health(silent_port)
    try:
        first = await health.readiness()
        assert first.database is None  # one slow answer: a busy machine, not an outage
        for _ in range(SLOW_STRIKES - 1):
            known = await health.readiness()
        assert known.database is not None and "TimeoutError" in known.database
    finally:
        await health.close()
