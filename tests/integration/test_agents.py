"""Agents by name: a session started from an agents file runs with that agent's model, system
prompt and tools only (seen in the requests the fake Anthropic server gets), the request's
fields override it, its first event records the definition, and a fork keeps it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import agents
from api.routes.common import SessionSettings
from eventstore.models import OFFLINE_MODEL
from tests.fakes import anthropic as fake
from tests.integration.test_agent_turns import MODEL, _plain
from tests.services import Stack, stack_on

AGENTS = f"""
[agents.support]
description = "Answers questions about orders"
model = "{MODEL}"
system = "You help customers with their orders."
tools = ["Echo", "lookup"]
max_steps = 5
metadata = {{team = "payments"}}

[agents.offline]
tools = ["charge"]
"""


@pytest.fixture(scope="module")
def claude() -> Iterator[fake.FakeAnthropic]:
    with fake.FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, log_dir: Path, claude: fake.FakeAnthropic, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    path = tmp_path_factory.mktemp("agents") / "agents.toml"
    path.write_text(AGENTS)
    async with stack_on(
        pg_server,
        log_dir,
        agents=path,
        tool_modules=["tests.custom_tools"],
        anthropic_base_url=claude.base_url,
        anthropic_api_key="test-key",
        default_model=OFFLINE_MODEL,  # with a key set, a session naming no model would get Claude
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


async def _session(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        return await client.post("/v1/sessions", json=body)


async def _say(stack: Stack, sid: str, text: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post(f"/v1/sessions/{sid}/messages", params={"wait": 30}, json={"content": text})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _started(stack: Stack, sid: str) -> dict[str, Any]:
    ((payload,),) = await stack.sql(
        "SELECT payload FROM events WHERE session_id = %s AND type = 'session_started'", sid
    )
    return dict(payload)


async def test_a_session_from_an_agent_runs_with_its_model_system_and_tools_only(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.reset()
    r = await _session(stack, {"agent": "support", "session_id": "a1"})
    assert r.status_code == 201, r.text
    assert (await _say(stack, "a1", "where is my order?"))["status"] == "completed"
    (request,) = [_plain(q) for q in claude.requests]
    assert request["model"] == MODEL
    assert request["system"] in (
        "You help customers with their orders.",
        [{"type": "text", "text": "You help customers with their orders."}],
    )
    assert sorted(t["name"] for t in request["tools"]) == ["Echo", "lookup"]
    payload = await _started(stack, "a1")
    assert (payload["model"], payload["max_steps"], payload["metadata"]) == (MODEL, 5, {"team": "payments"})
    recorded = payload["agent"]
    assert recorded["name"] == "support" and recorded["definition"]["system"] == payload["system"]
    listed = {a["name"]: a for a in await _agents(stack)}
    assert recorded["sha256"] == listed["support"]["sha256"]


async def test_the_request_overrides_the_agent_and_a_fork_keeps_what_it_started_from(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    r = await _session(stack, {"agent": "support", "session_id": "a2", "system": "Be brief.", "max_steps": 9})
    assert r.status_code == 201, r.text
    claude.reset()
    await _say(stack, "a2", "hello")
    (request,) = [_plain(q) for q in claude.requests]
    assert request["model"] == MODEL and request["system"] in (
        "Be brief.",
        [{"type": "text", "text": "Be brief."}],
    )
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        forked = await client.post("/v1/sessions/a2/fork", json={"session_id": "a2-fork"})
    assert forked.status_code == 201, forked.text
    original, fork = await _started(stack, "a2"), await _started(stack, "a2-fork")
    assert fork["agent"] == original["agent"] and fork["system"] == "Be brief." and fork["max_steps"] == 9


async def test_an_agents_users_tools_run_and_others_are_refused(stack: Stack) -> None:
    r = await _session(stack, {"agent": "offline", "session_id": "a3"})
    assert r.status_code == 201, r.text
    done = await _say(
        stack, "a3", 'call charge {"order_id": "o", "amount_cents": 3}\ncall Echo {"text": "x"}'
    )
    assert done["output_text"].count("(error)") == 1
    assert "(error): unknown tool 'Echo'; the tools available are: charge" in done["output_text"]
    assert ": charged 3 cents to o" in done["output_text"]


async def test_cli_chat_starts_a_session_from_an_agent(stack: Stack, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agentlog.cli import app

    argv = ["chat", "a4", "--agent", "offline", "--data-dir", str(tmp_path)]
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        argv,
        input='call charge {"order_id": "c", "amount_cents": 1}\n',
        env={"AGENTLOG_API_URL": stack.api_url},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "← charged 1 cents to c" in result.stdout, result.stdout
    assert (await _started(stack, "a4"))["agent"]["name"] == "offline"


async def test_an_unknown_agent_is_a_422_naming_the_field(stack: Stack) -> None:
    r = await _session(stack, {"agent": "nobody"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "agent" and "offline, support" in r.json()["detail"]
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post("/v1/sessions/new-one/messages", json={"content": "hi", "agent": "nobody"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "agent"


async def _agents(stack: Stack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.get("/v1/agents")
    assert r.status_code == 200
    return list(r.json()["data"])


async def test_agents_are_listed(stack: Stack) -> None:
    support, offline = sorted(await _agents(stack), key=lambda a: a["name"], reverse=True)
    assert support["name"] == "support" and support["tools"] == ["Echo", "lookup"]
    assert support["description"] == "Answers questions about orders"
    assert offline == {"name": "offline", "sha256": offline["sha256"], "tools": ["charge"], "metadata": {}}


def test_the_request_overrides_what_it_sets_and_null_is_not_set() -> None:
    agent = agents.AgentDefinition(model="m", system="s", tools=["Echo"], metadata={"a": 1}, max_steps=3)
    request = SessionSettings(model=None, system="mine", metadata={"b": 2})
    merged = agents.settings_from(agent, request)
    assert merged.model_dump(exclude_unset=True) == {
        "model": "m",
        "system": "mine",
        "tools": ["Echo"],
        "metadata": {"a": 1, "b": 2},
        "max_steps": 3,
    }


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("[agents.x]\nmodle = 'a'\n", "[agents.x] modle: Extra inputs are not permitted"),
        (
            "[agents.x]\ntools = ['mcp__github__create_issue']\n",
            "agentlog names an MCP server's tools SERVER__TOOL",
        ),
        ("[agents.x]\nmax_steps = 0\n", "[agents.x] max_steps: Input should be greater than or equal to 1"),
        ("[agent.x]\n", "only [agents.NAME] tables are read"),
        ("[agents.x\n", "agents.toml: Expected ']'"),
    ],
)
def test_a_wrong_agents_file_stops_the_api_saying_what(tmp_path: Path, text: str, wrong: str) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    with pytest.raises(agents.AgentsFileError, match=None) as raised:
        agents.load(path)
    assert wrong in str(raised.value)
