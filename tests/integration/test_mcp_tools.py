"""Tools of real MCP servers (tests/mcp_server.py, run by the SDK's server side as a
subprocess): a deployment's stdio server and a session's streamable HTTP server, called by
the offline model and by Claude through the fake Messages API, classed and approved as
their annotations say, their results redacted and recorded like any tool's."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlog.devstack import free_port
from agentlog.fake_anthropic import FakeAnthropic, text, tool_use
from eventstore.mcp import McpServer, McpTool
from eventstore.models import CLAUDE_DEFAULT, OFFLINE_MODEL
from eventstore.settings import Settings
from processors.tools.mcp import McpRun
from processors.tools.mcp_pool import Pool
from processors.tools.registry import ToolContext
from tests.integration.test_tools_pipeline import call, results
from tests.integration.test_tools_pipeline import turn as posted
from tests.services import Stack, stack_on, wait_until

SERVER = Path(__file__).parents[1] / "mcp_server.py"


def stdio_server(runs: Path) -> dict[str, Any]:
    """The test server over stdio, counting its runs in `runs`."""
    return {"command": [sys.executable, str(SERVER), "stdio"], "env": {"MCP_TEST_LOG": str(runs)}}


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server accepts connections (it is a fresh Python process: a second or so)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the MCP test server did not listen on {port}")


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The test server over streamable HTTP on a free loopback port: (its URL, its run log)."""
    runs = tmp_path_factory.mktemp("mcp-http") / "runs.log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env={"MCP_TEST_LOG": str(runs), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp", runs
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="module")
async def stack(
    pg_server: str, log_dir: Path, tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic
) -> AsyncIterator[Stack]:
    runs = tmp_path_factory.mktemp("mcp-stdio") / "runs.log"
    servers = {"shop": stdio_server(runs)}
    async with stack_on(
        pg_server, log_dir, mcp_servers=servers, anthropic_api_key="sk-test", anthropic_base_url=fake.base_url
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        stack.runs = runs  # type: ignore[attr-defined]
        yield stack


async def turn(stack: Stack, sid: str, *lines: str, wait: float = 30, **session: Any) -> dict[str, Any]:
    """A turn of the offline model, unless the session names another."""
    return await posted(stack, sid, *lines, wait=wait, **{"model": OFFLINE_MODEL, **session})


def _runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def _offered(stack: Stack, sid: str) -> list[list[dict[str, Any]] | None]:
    """The `mcp_tools` of each assistant message of the session, in order."""
    rows = await stack.sql(
        "SELECT payload->'mcp_tools' FROM events WHERE session_id = %s AND type = 'assistant_message'"
        " ORDER BY seq",
        sid,
    )
    return [row[0] for row in rows]


async def test_the_offline_model_calls_a_stdio_servers_tools_and_the_list_is_recorded_once(
    stack: Stack,
) -> None:
    done = await turn(
        stack, "m1", call("shop__stock", sku="a-1"), call("shop__charge", order_id="o-1", cents=5)
    )
    assert done["status"] == "completed", done
    assert await results(stack, "m1") == [
        ("shop__charge", "charged 5 cents to o-1", False),
        ("shop__stock", "a-1: 7 in stock", False),
    ]
    assert sorted(_runs(stack.runs)) == ["charge o-1 5", "stock a-1"]  # type: ignore[attr-defined]
    await turn(stack, "m1", "thanks")
    first, *later = await _offered(stack, "m1")
    assert later and all(offer is None for offer in later)  # listed on the first call only
    assert first is not None
    # A fork is offered what its source was, without listing again.
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.post("/v1/sessions/m1/fork", json={"session_id": "m1-fork"})
        assert r.status_code == 201, r.text
    forked = await turn(stack, "m1-fork", call("shop__stock", sku="f-1"))
    assert forked["status"] == "completed" and "f-1: 7 in stock" in forked["output_text"]
    assert all(offer is None for offer in await _offered(stack, "m1-fork"))
    classes = {t["name"]: (t["effect"], t["approval"]) for t in first}
    assert classes == {
        "shop__charge": ("write", False),  # not idempotent, not destructive
        "shop__fail": ("read", False),
        "shop__note": ("write", True),  # no annotations: the spec's defaults, destructive
        "shop__secret": ("read", False),
        "shop__slow": ("write", False),
        "shop__stock": ("read", False),
        "shop__wipe": ("write", True),
    }


async def test_a_destructive_tool_waits_for_approval(stack: Stack) -> None:
    await turn(stack, "m2", call("shop__wipe", order_id="o-9"), wait=0)
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:

        async def pending() -> list[dict[str, Any]]:
            r = await client.get("/v1/sessions/m2/approvals", params={"status": "pending"})
            return list(r.json()["data"]) if r.status_code == 200 else []

        (waiting,) = await wait_until(pending)
        assert waiting["name"] == "shop__wipe"
        assert "wipe o-9" not in _runs(stack.runs)  # type: ignore[attr-defined]
        r = await client.post(
            f"/v1/sessions/m2/approvals/{waiting['approval_id']}", json={"decision": "approve"}
        )
        assert r.status_code == 202

    async def wiped() -> list[tuple[str, str, bool]]:
        return [r for r in await results(stack, "m2") if r[1] is not None]

    assert await wait_until(wiped) == [("shop__wipe", "wiped o-9", False)]


async def test_errors_and_secrets_come_back_as_for_any_tool(stack: Stack) -> None:
    await turn(
        stack, "m3", call("shop__fail", reason="boom"), call("shop__secret"), call("shop__stock", sku=3)
    )
    got = {name: (text, is_error) for name, text, is_error in await results(stack, "m3")}
    assert got["shop__fail"] == ("Error executing tool fail", True)
    assert "AKIAIOSFODNN7EXAMPLE" not in got["shop__secret"][0] and "[REDACTED" in got["shop__secret"][0]
    assert got["shop__stock"][1] and "sku" in got["shop__stock"][0]  # the server validates the input


async def test_a_sessions_own_http_server(stack: Stack, http_server: tuple[str, Path]) -> None:
    url, runs = http_server
    servers = {"web": {"url": url, "tools": {"charge": {"effect": "idempotent_write"}}}}
    done = await turn(stack, "m4", call("web__charge", order_id="o-4", cents=9), mcp_servers=servers)
    assert done["status"] == "completed", done["error"]
    assert await results(stack, "m4") == [("web__charge", "charged 9 cents to o-4", False)]
    assert _runs(runs) == ["charge o-4 9"]
    offer, *_ = await _offered(stack, "m4")
    assert offer is not None
    names = {t["name"]: t["effect"] for t in offer}
    assert names["web__charge"] == "idempotent_write" and names["shop__stock"] == "read"  # both servers


async def test_a_session_may_not_name_a_command_unless_the_deployment_allows_it(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.post("/v1/sessions", json={"mcp_servers": {"x": {"command": ["/bin/sh"]}}})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "mcp_servers.x.command"
        r = await client.post("/v1/sessions", json={"mcp_servers": {"a__b": {"url": "http://127.0.0.1:1/"}}})
        assert r.status_code == 422 and "mcp_servers" in r.json()["detail"]


async def test_claude_is_offered_the_tools_and_calls_one(stack: Stack, fake: FakeAnthropic) -> None:
    fake.script(tool_use(("shop__stock", {"sku": "c-1"})), text("Seven."))
    done = await turn(stack, "m5", "how many c-1?", model=CLAUDE_DEFAULT)
    assert done["status"] == "completed" and done["output_text"] == "Seven."
    assert await results(stack, "m5") == [("shop__stock", "c-1: 7 in stock", False)]
    first, second = fake.requests[-2:]
    offered = {t["name"]: t for t in first["tools"]}
    assert offered["shop__stock"]["input_schema"]["required"] == ["sku"]
    assert [t["name"] for t in first["tools"]] == [t["name"] for t in second["tools"]]
    assert json.dumps(second["messages"][-1]).count("c-1: 7 in stock") == 1


async def test_a_server_that_cannot_be_listed_fails_the_turn_saying_which(stack: Stack) -> None:
    dead = {"gone": {"url": f"http://127.0.0.1:{free_port()}/mcp"}}
    done = await turn(stack, "m6", "hello", mcp_servers=dead)
    assert done["status"] == "failed"
    assert done["error"].startswith("model call not made: MCP server 'gone' failed: "), done["error"]
    assert await _offered(stack, "m6") == []  # nothing was offered, so nothing is recorded


async def test_a_write_past_its_time_limit_is_outcome_unknown(tmp_path: Path) -> None:
    runs = tmp_path / "runs.log"
    server = McpServer.model_validate(stdio_server(runs))
    offered = McpTool(name="shop__slow", server="shop", tool="slow", effect="write", approval=False)
    # Long enough for the server to start and take the call on a loaded machine (a limit
    # that runs out while it starts is "did not finish", rightly not "outcome unknown").
    ctx = ToolContext(session_id="t", workspace=tmp_path, settings=Settings(tool_timeout_s=8))
    out = await McpRun(offered, server).run({"seconds": 30}, ctx)
    assert out.is_error and str(out.content).startswith(
        "outcome unknown: shop__slow did not finish within 8 s"
    ), out.content
    assert _runs(runs) == ["slow 30.0"]
    dead = McpServer(command=[str(tmp_path / "no-such-program")])
    out = await McpRun(offered, dead).run({"seconds": 1}, ctx)  # never started: nothing ran
    assert out.is_error and str(out.content).startswith("MCP server 'shop' failed: "), out.content


async def test_the_executor_keeps_a_connection_open_across_calls(tmp_path: Path) -> None:
    server = McpServer.model_validate(stdio_server(tmp_path / "runs.log"))
    offered = McpTool(name="shop__stock", server="shop", tool="stock", effect="read", approval=False)
    ctx = ToolContext(session_id="t", workspace=tmp_path, settings=Settings())
    pool = Pool()
    try:
        run = McpRun(offered, server, pool)
        assert (await run.run({"sku": "a"}, ctx)).content == "a: 7 in stock"
        (first,) = pool.held.values()
        assert (await run.run({"sku": "b"}, ctx)).content == "b: 7 in stock"
        assert list(pool.held.values()) == [first]  # the same connection, the same server process
        pool.drop("shop", server)
        assert (await run.run({"sku": "c"}, ctx)).content == "c: 7 in stock"  # connected again
        assert list(pool.held.values()) != [first]
    finally:
        await pool.close()
    assert not pool.held and all(h.task.done() for h in [first])
