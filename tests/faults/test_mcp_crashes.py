"""SIGKILL of the executor around a call to a real MCP server's tool (stdio, the test server
of tests/mcp_server.py): a `write` tool cut short between call and record is answered
"outcome unknown" and never called again; a `read` tool is called again, or its recorded
result reused. The same list of tools is offered before and after the crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentlog.fake_anthropic import FakeAnthropic, text, tool_use
from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import CLAUDE_DEFAULT
from tests.faults.test_tool_crashes import _crash_and_recover, _post
from tests.integration.test_mcp_tools import stdio_server
from tests.services import Stack, stack_on


async def _post_for_claude(
    stack: Stack, sid: str, fake: FakeAnthropic, tool: str, tool_input: dict[str, Any]
) -> None:
    """A session of Claude (the fake Messages API), which answers with a call of the tool."""
    fake.script(tool_use((tool, tool_input)), text("Done."))
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    at = datetime.now(UTC)
    await kafka.append_many(
        [
            ev.session_started(sid, model=CLAUDE_DEFAULT, at=at),
            ev.user_message(sid, text="go", idempotency_key="a", at=at),
        ]
    )
    await kafka.stop()


@pytest.mark.parametrize(
    ("model", "tool", "runs", "answer"),
    [
        ("offline", "charge", 1, None),  # ran, not recorded: unknown, not rerun
        ("claude", "stock", 2, "p-1: 7 in stock"),  # a read runs again
    ],
)
async def test_an_mcp_tool_killed_between_call_and_record(
    model: str, tool: str, runs: int, answer: str | None, pg_server: str, log_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    servers = {"shop": stdio_server(log)}
    tool_input: dict[str, Any] = {"order_id": "o-7", "cents": 5} if tool == "charge" else {"sku": "p-1"}
    with FakeAnthropic() as fake:
        claude = {"anthropic_api_key": "sk-test", "anthropic_base_url": fake.base_url}
        async with stack_on(pg_server, log_dir, partitions=2, mcp_servers=servers, **claude) as stack:
            await stack.start("projector", "reactor", "model")
            if model == "claude":
                await _post_for_claude(stack, "k", fake, f"shop__{tool}", tool_input)
            else:
                await _post(stack, "k", f"call shop__{tool} {json.dumps(tool_input)}")
            await _crash_and_recover_and_check(stack, log_dir, log, servers, runs, answer)
            if model == "claude":
                first, second = fake.requests
                assert [t["name"] for t in first["tools"]] == [t["name"] for t in second["tools"]]


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


async def _crash_and_recover_and_check(
    stack: Stack, log_dir: Path, log: Path, servers: dict[str, Any], runs: int, answer: str | None
) -> None:
    """Kill the executor after its call, before its record; a second one finishes the turn."""
    env = {"AGENTLOG_MCP_SERVERS": json.dumps(servers)}
    result, is_error = await _crash_and_recover(stack, log_dir, "tool-worker.after_call", env)
    assert len(_lines(log)) == runs
    if answer is None:
        assert is_error and result.startswith(
            "outcome unknown: the shop__charge call may or may not have run"
        )
    else:
        assert (result, is_error) == (answer, False)
