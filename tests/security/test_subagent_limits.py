"""A sub-agent is never freer than its parent, in both sub-agent models: its tools are at most
its parent's, and it takes its parent's approvals, token budget and step limit (a parent with
Bash under approval cannot get an unapproved Bash through Task). `/v1/agent/run` and a
parentless `/v1/subagent/run` apply AGENTLOG_APPROVAL_TOOLS like any new session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Stack, stack_on, wait_until

pytestmark = pytest.mark.services

PARENT = {
    "tools": ["Bash", "Echo", "Task"],
    "approvals": ["Bash"],
    "token_budget": 123_456,
    "max_steps": 7,
    "max_tokens": 999,
}


def task(prompt: str, **extra: Any) -> str:
    return "call Task " + json.dumps({"description": "a sub-task", "prompt": prompt, **extra})


async def child_of(stack: Stack, parent: str) -> tuple[str, dict[str, Any]]:
    """The parent's first child (waited for) and its session_started payload."""

    async def started() -> list[tuple[Any, ...]]:
        return await stack.sql(
            "SELECT e.session_id, e.payload FROM events e JOIN sessions s USING (session_id)"
            " WHERE s.parent_session_id = %s AND e.type = 'session_started'",
            parent,
        )

    ((sid, payload), *_) = await wait_until(started, within=30)
    return str(sid), dict(payload)


async def pending_approvals(stack: Stack, sid: str) -> list[tuple[Any, ...]]:
    return await stack.sql("SELECT name, status FROM approvals WHERE session_id = %s", sid)


@pytest.mark.parametrize("mode", ["queue", "http"])
async def test_a_child_takes_its_parents_tools_approvals_and_limits(
    pg_server: str, log_dir: Path, mode: str
) -> None:
    async with stack_on(pg_server, log_dir, subagent_mode=mode, subagent_timeout_s=20) as stack:
        url = await stack.start_api()
        await stack.start("projector", "reactor", "model", "tools", "subagents", api_url=url)
        # The model asks for Bash and for a tool its parent lacks (Glob).
        asked = task('call Bash {"command": "echo ran"}', tools=["Bash", "Glob"])
        await stack.turn("parent", asked, wait=0, **PARENT)
        child, started = await child_of(stack, "parent")
        assert started["tools"] == ["Bash"]
        assert started["approvals"] == ["Bash"]
        assert (started["token_budget"], started["max_steps"], started["max_tokens"]) == (123_456, 7, 999)
        # The child's Bash waits for a human, as its parent's would; it never ran.
        assert await wait_until(lambda: pending_approvals(stack, child)) == [("Bash", "pending")]
        assert await stack.sql(
            "SELECT count(*) FROM tool_calls WHERE session_id = %s AND result IS NOT NULL", child
        ) == [(0,)]
        # Asking for no tools gets the parent's, not every tool.
        await stack.turn("parent-2", task("Say hi."), wait=0, **PARENT)
        _, started = await child_of(stack, "parent-2")
        assert started["tools"] == ["Bash", "Echo", "Task"]


async def test_the_api_gives_a_child_no_tool_its_parent_lacks(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir) as stack:
        url = await stack.start_api()
        await stack.start("projector", "reactor", "model")
        done = await stack.turn("narrow", "Hello.", tools=["Echo"], approvals=["Echo"], max_steps=3)
        assert done["status"] == "completed"
        async with httpx.AsyncClient(base_url=url, timeout=60) as api:
            r = await api.post(
                "/v1/subagent/run",
                json={"prompt": "Say hi.", "tools": ["Bash", "Echo"], "parent_session_id": "narrow"},
            )
        assert r.status_code == 200, r.text
        _, started = await child_of(stack, "narrow")
        assert (started["tools"], started["approvals"], started["max_steps"]) == (["Echo"], ["Echo"], 3)


async def test_agent_run_and_a_parentless_subagent_run_honour_approval_tools(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, approval_tools=["Echo"], max_steps=9) as stack:
        url = await stack.start_api()
        await stack.start("projector", "reactor", "model", "tools")
        async with httpx.AsyncClient(base_url=url, timeout=60) as api:
            for path in ("/v1/agent/run", "/v1/subagent/run"):
                r = await api.post(path, json={"prompt": 'call Echo {"text": "unapproved"}', "timeout_s": 2})
                assert r.status_code == 504, r.text  # waiting for a human, not answered
                sid = r.json()["session_id"]
                assert await wait_until(lambda sid=sid: pending_approvals(stack, sid)) == [
                    ("Echo", "pending")
                ]
                ((payload,),) = await stack.sql(
                    "SELECT payload FROM events WHERE session_id = %s AND type = 'session_started'", sid
                )
                assert (payload["approvals"], payload["max_steps"]) == (["Echo"], 9)
