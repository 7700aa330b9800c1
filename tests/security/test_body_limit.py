"""The body limit is counted on the bytes as they arrive, before authentication: a chunked
body over it (which has no Content-Length to read) is answered 413 problem+json without being
read whole, with a token or without, and a refused body leaves nothing behind. Real chunked
requests over a socket to the real api on a real broker and Postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from eventstore.log import partition_for
from tests.services import Stack, stack_on, wait_until

pytestmark = pytest.mark.services

LIMIT = 64 * 1024
TOKEN = "agl_body_limit_test_token"


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server, log_dir, auth_required=True, api_tokens=f"{TOKEN}:acme", max_body_bytes=LIMIT
    ) as stack:
        await stack.start("projector")
        await stack.start_api()
        yield stack


async def chunked(
    stack: Stack, path: str, chunks: Iterable[bytes], *, finish: bool, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST a chunked body (ended, or left open as a client still sending would); the answer."""
    where = urlsplit(stack.api_url or "")
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {where.netloc}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            *([f"Authorization: Bearer {token}"] if token else []),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        if finish:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        headers: dict[str, str] = {}
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 30)
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


def message(content: str) -> list[bytes]:
    """A user turn's JSON body in 16 KiB chunks."""
    data = json.dumps({"content": content}).encode()
    return [data[i : i + 16384] for i in range(0, len(data), 16384)]


def assert_413(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, body
    assert headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == 413 and str(LIMIT) in problem["detail"]


async def test_an_unauthenticated_chunked_body_is_refused_at_the_limit_unread(stack: Stack) -> None:
    # Just past the limit, and the client keeps the body open: the answer comes from the
    # bytes counted, not from waiting for (or reading) the whole 20 MB it would send.
    over = [b"x" * 16384] * (LIMIT // 16384 + 1)
    assert_413(*await chunked(stack, "/v1/sessions/anon/messages", over, finish=False))


async def test_an_authenticated_chunked_body_over_the_limit_starts_nothing(stack: Stack) -> None:
    status, headers, body = await chunked(
        stack, "/v1/sessions/big/messages", message("y" * (2 * LIMIT)), finish=True, token=TOKEN
    )
    assert_413(status, headers, body)
    # The same session, within the limit and chunked too, is accepted and is the only turn.
    status, _, body = await chunked(
        stack, "/v1/sessions/big/messages", message("small"), finish=True, token=TOKEN
    )
    assert status == 202, body

    async def events() -> list[tuple[str, Any]]:
        rows = await stack.sql(
            "SELECT type, tenant_id FROM events WHERE session_id = 'acme~big' ORDER BY seq",
        )
        return rows if any(t == "user_message" for t, _ in rows) else []

    rows = await wait_until(events)
    assert [t for t, _ in rows] == ["session_started", "user_message"] and {t for _, t in rows} == {"acme"}
    assert await stack.sql("SELECT count(*) FROM sessions WHERE session_id LIKE '%anon'") == [(0,)]


@pytest.fixture
async def small_log(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    """A log whose records are smaller than the bodies the api accepts, and no room for larger
    payloads by reference either (tests/integration/test_oversized_payloads.py has that)."""
    async with stack_on(pg_server, log_dir, kafka_max_request_size=LIMIT, payload_max_bytes=LIMIT) as stack:
        await stack.start("projector")
        await stack.start_api()
        yield stack


async def test_a_turn_too_large_for_the_log_is_413_not_retried_and_appends_nothing(small_log: Stack) -> None:
    status, headers, body = await chunked(
        small_log, "/v1/sessions/huge/messages", message("z" * (2 * LIMIT)), finish=True
    )
    assert status == 413 and "retry-after" not in headers, (headers, body)
    assert "over the log's limit" in json.loads(body)["detail"]
    # A later event of the same partition is projected: anything the refused turn had appended
    # before it (its session_started) would be projected by then.
    partitions = small_log.settings.partitions
    fence = next(
        f"fence-{i}"
        for i in range(1000)
        if partition_for(f"fence-{i}", partitions) == partition_for("huge", partitions)
    )
    status, _, body = await chunked(small_log, f"/v1/sessions/{fence}/messages", message("hi"), finish=True)
    assert status == 202, body

    async def fenced() -> bool:
        return bool(
            await small_log.sql("SELECT 1 FROM events WHERE session_id = %s AND type = 'user_message'", fence)
        )

    await wait_until(fenced)
    assert await small_log.sql("SELECT type FROM events WHERE session_id = 'huge'") == []
