"""The testing kit as users use it: the plugin's fixtures start the embedded stack with the
user's tools (`agentlog_settings` overridden, as a user's conftest would) and the fake
Anthropic server, and a turn runs against them."""

from __future__ import annotations

from typing import Any

import pytest

from agentlog.fake_anthropic import FakeAnthropic, text, tool_use
from agentlog.testing.stack import Stack
from tests.integration.test_agent_turns import MODEL


@pytest.fixture
def agentlog_settings(agentlog_settings: dict[str, Any]) -> dict[str, Any]:
    return {**agentlog_settings, "tool_modules": ["tests.custom_tools"]}


async def test_an_offline_turn_runs_a_users_tool(agentlog_stack: Stack) -> None:
    done = await agentlog_stack.turn("kit", 'call charge {"order_id": "o", "amount_cents": 5}')
    assert done["status"] == "completed"
    assert await agentlog_stack.tool_calls("kit") == [("charge", "charged 5 cents to o", False)]


async def test_a_claude_turn_against_the_fake_server_runs_a_users_tool(
    agentlog_stack: Stack, agentlog_fake_anthropic: FakeAnthropic
) -> None:
    agentlog_fake_anthropic.script(tool_use(("lookup", {"order_id": "o"})), text("It is paid."))
    done = await agentlog_stack.turn("kit-claude", "is o paid?", model=MODEL, tools=["lookup"])
    assert (done["status"], done["output_text"]) == ("completed", "It is paid.")
    assert await agentlog_stack.tool_calls("kit-claude") == [
        ("lookup", '{"order_id": "o", "status": "paid"}', False)
    ]
    (first, _) = agentlog_fake_anthropic.requests
    assert [t["name"] for t in first["tools"]] == ["lookup"]
