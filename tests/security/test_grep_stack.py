"""One session's catastrophic regex does not stop the executor: through the whole stack (api,
reactor, offline model, tool executor, real broker and Postgres), other sessions' tool calls
complete while it is searched, and its own answer is right."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Stack, stack_on

pytestmark = pytest.mark.services

EVIL_LINE = "a" * 40 + "!"


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


def call(tool: str, **tool_input: Any) -> str:
    return f"call {tool} {json.dumps(tool_input)}"


async def turn(api: httpx.AsyncClient, sid: str, line: str, wait: float = 60) -> dict[str, Any]:
    r = await api.post(f"/v1/sessions/{sid}/messages", params={"wait": wait}, json={"content": line})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def result(stack: Stack, sid: str, name: str) -> tuple[str, bool]:
    rows = await stack.sql(
        "SELECT result #>> '{}', is_error FROM tool_calls WHERE session_id = %s AND name = %s", sid, name
    )
    (text, is_error) = rows[-1]
    return str(text), bool(is_error)


async def test_other_sessions_tools_complete_while_a_catastrophic_grep_runs(stack: Stack) -> None:
    content = "\n".join([EVIL_LINE] * 2000 + ["a" * 40])
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=120) as api:
        wrote = await turn(api, "evil", call("Write", file_path="evil.txt", content=content))
        assert wrote["status"] == "completed", wrote
        evil = asyncio.create_task(turn(api, "evil", call("Grep", pattern="(a+)+$")))
        others = [turn(api, f"other-{i}", call("Echo", text=f"still here {i}")) for i in range(3)]
        done = await asyncio.wait_for(asyncio.gather(*others), 120)
        assert all(d["status"] == "completed" for d in done), done
        assert [(await result(stack, f"other-{i}", "Echo")) for i in range(3)] == [
            (f"still here {i}", False) for i in range(3)
        ]
        finished = await asyncio.wait_for(evil, 120)
    assert finished["status"] == "completed", finished
    assert await result(stack, "evil", "Grep") == ("evil.txt:2001:" + "a" * 40, False)
