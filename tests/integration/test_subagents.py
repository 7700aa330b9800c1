"""Sub-agents through the real parts: the Task tool's queue model, timeouts and attempts, the
depth limit, and the HTTP model (parents and children on different replicas:
tests/faults/test_replicas.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from processors.tools.registry import Echo, EffectClass, Registry, ToolContext, ToolOutput
from processors.tools.task import Task
from tests.services import Stack, stack_on


class Sleep:
    """A slow tool, so that a child can outlast its timeout."""

    name = "Sleep"
    description = "Sleeps for `seconds`."
    input_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"seconds": {"type": "number"}}}

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        await asyncio.sleep(float(tool_input.get("seconds", 1)))
        return ToolOutput("slept")


TOOLS = Registry([Echo(), Sleep(), Task()])


def task(prompt: str, **extra: Any) -> str:
    return "call Task " + json.dumps({"description": "a sub-task", "prompt": prompt, **extra})


async def post(stack: Stack, sid: str, content: str, wait: float = 60) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=120) as client:
        r = await client.post(
            f"/v1/sessions/{sid}/messages", params={"wait": wait} if wait else None, json={"content": content}
        )
        assert r.status_code in (200, 202), r.text
        return dict(r.json())


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, subagent_timeout_s=3, expiry_check_s=0.2) as stack:
        await stack.start("projector", "reactor", "model", "tools", "subagents", tools=TOOLS)
        await stack.start_api()
        yield stack


async def test_a_parent_fans_out_to_four_children(stack: Stack) -> None:
    lines = "\n".join(task(f"Say the word {word}.") for word in ("alpha", "beta", "gamma", "delta"))
    done = await post(stack, "boss", lines)
    assert done["status"] == "completed", done
    for word in ("alpha", "beta", "gamma", "delta"):
        assert f'You said: "Say the word {word}."' in done["output_text"]
    rows = await stack.sql(
        "SELECT a.status, a.attempt, a.is_error, s.parent_session_id, s.depth, s.metadata->>'subagent_worker'"
        " FROM subagents a JOIN sessions s ON s.session_id = a.child_session_id"
        " WHERE a.parent_session_id = 'boss'"
    )
    assert len(rows) == 4
    assert {r[:5] for r in rows} == {("completed", 1, False, "boss", 1)}
    assert {r[5] for r in rows} == {"subagent-worker"}  # (over replicas: tests/faults/test_replicas.py)
    completions = await stack.sql(
        "SELECT payload->>'tool_use_id', count(*) FROM events WHERE session_id = 'boss'"
        " AND type = 'subagent_completed' GROUP BY 1"
    )
    assert len(completions) == 4 and all(n == 1 for _, n in completions)


async def test_a_child_past_its_timeout_is_retried_once_then_reported(stack: Stack) -> None:
    slow = task('call Sleep {"seconds": 30}', tools=["Sleep"])
    done = await post(stack, "impatient", slow, wait=60)
    assert done["status"] == "completed"
    assert "the sub-agent did not finish: 2 attempt(s) of 3 s each timed out" in done["output_text"]
    attempts = await stack.sql(
        "SELECT attempt, status FROM subagents WHERE parent_session_id = 'impatient' ORDER BY attempt"
    )
    assert attempts == [(1, "abandoned"), (2, "timed_out")]


async def test_the_depth_limit_stops_a_child_from_spawning(stack: Stack) -> None:
    nested = task(task("Say nested."))
    done = await post(stack, "deep", nested)
    assert done["status"] == "completed"
    # depth 0 (the parent) may start a child at depth 1; the default max_depth is 2, so the
    # child at depth 1 may start one at depth 2, which may not start another.
    three_deep = task(task(task("Say too deep.")))
    done = await post(stack, "deeper", three_deep)
    child_answers = await stack.sql("SELECT result FROM subagents WHERE depth = 2 AND result IS NOT NULL")
    assert any("depth limit: a sub-agent at depth 2 may not start another" in r[0] for r in child_answers)


async def test_the_http_model_answers_or_times_out_with_504(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post(
            "/v1/subagent/run", json={"prompt": "Say hi.", "timeout_s": 30}, headers={"Idempotency-Key": "k1"}
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["status"] == "completed" and 'You said: "Say hi."' in answer["output_text"]
        again = await client.post(
            "/v1/subagent/run", json={"prompt": "Say hi.", "timeout_s": 30}, headers={"Idempotency-Key": "k1"}
        )
        assert again.json()["session_id"] == answer["session_id"]  # the same child, not a second one
        slow = await client.post(
            "/v1/subagent/run",
            json={"prompt": 'call Sleep {"seconds": 30}', "tools": ["Sleep"], "timeout_s": 1},
        )
        assert slow.status_code == 504
        assert slow.headers["content-type"].startswith("application/problem+json")
        assert slow.json()["session_id"].startswith("http-")
        bad = await client.post("/v1/subagent/run", json={"prompt": "", "timeout_s": 1000})
        assert bad.status_code == 422
        assert {e["field"] for e in bad.json()["errors"]} == {"prompt", "timeout_s"}


async def test_the_task_tool_can_use_the_http_model(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, subagent_mode="http") as stack:
        url = await stack.start_api()
        await stack.start("projector", "reactor", "model", "tools", tools=TOOLS, api_url=url)
        done = await post(stack, "direct", task("Say direct."))
        assert done["status"] == "completed"
        assert 'You said: "Say direct."' in done["output_text"]
        assert await stack.sql("SELECT count(*) FROM subagents") == [(0,)]  # no queue involved
        children = await stack.sql("SELECT parent_session_id FROM sessions WHERE session_id LIKE 'http-%'")
        assert children == [("direct",)]


async def test_one_executor_serves_every_tenant_with_the_service_token(pg_server: str, log_dir: Path) -> None:
    tokens = "tok-a:tenant-a,tok-b:tenant-b"
    async with stack_on(
        pg_server, log_dir, subagent_mode="http", auth_required=True, api_tokens=tokens, service_token="svc-1"
    ) as stack:
        url = await stack.start_api()
        await stack.start("projector", "reactor", "model", "tools", tools=TOOLS, api_url=url)
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for tenant in ("a", "b"):
                r = await client.post(
                    f"/v1/sessions/svc-{tenant}/messages?wait=60",
                    json={"content": task(f"Say {tenant}.")},
                    headers={"Authorization": f"Bearer tok-{tenant}"},
                )
                assert r.status_code == 200 and r.json()["status"] == "completed", r.text
                assert f'You said: "Say {tenant}."' in r.json()["output_text"]
            # The service token starts sub-agents only (tests/security/test_service_token.py).
            bare = await client.get("/v1/sessions", headers={"Authorization": "Bearer svc-1"})
            assert bare.status_code == 403
            forged = await client.get(
                "/v1/sessions", headers={"Authorization": "Bearer svc-2", "X-Agentlog-Tenant": "tenant-a"}
            )
            assert forged.status_code == 401
            # A tenant's token cannot borrow another tenant with the header.
            mine = await client.get(
                "/v1/sessions", headers={"Authorization": "Bearer tok-b", "X-Agentlog-Tenant": "tenant-a"}
            )
            assert {s["id"] for s in mine.json()["data"]} >= {"svc-b"}
            assert "svc-a" not in {s["id"] for s in mine.json()["data"]}
        children = await stack.sql(
            "SELECT parent_session_id, tenant_id FROM sessions WHERE session_id LIKE '%~http-%' ORDER BY 1"
        )
        assert children == [("tenant-a~svc-a", "tenant-a"), ("tenant-b~svc-b", "tenant-b")]
