"""An MCP tool's class and approval: the configuration over the server's annotations over the
spec's defaults (a tool that is not read-only is destructive unless it says otherwise)."""

from __future__ import annotations

import mcp_types
import pytest
from pydantic import ValidationError

from eventstore.mcp import McpServer
from eventstore.settings import Settings
from processors.tools.mcp import classified, label

SERVER = McpServer(command=["server"])


def _tool(name: str = "t", hints: dict[str, bool] | None = None) -> mcp_types.Tool:
    annotations = mcp_types.ToolAnnotations.model_validate(hints) if hints else None
    return mcp_types.Tool(
        name=name, input_schema={"type": "object", "title": "tArguments"}, annotations=annotations
    )


@pytest.mark.parametrize(
    ("hints", "effect", "approval"),
    [
        ({}, "write", True),  # nothing said: a destructive write, never rerun
        ({"read_only_hint": True}, "read", False),
        ({"idempotent_hint": True, "destructive_hint": False}, "idempotent_write", False),
        ({"destructive_hint": False}, "write", False),
        ({"read_only_hint": False, "destructive_hint": True}, "write", True),
    ],
)
def test_the_annotations_give_the_class(hints: dict[str, bool], effect: str, approval: bool) -> None:
    offered = classified("srv", SERVER, _tool(hints=hints))
    assert offered is not None
    assert (offered.name, offered.effect, offered.approval) == ("srv__t", effect, approval)
    assert "title" not in offered.input_schema


def test_the_configuration_wins_over_the_annotations() -> None:
    server = McpServer(url="http://127.0.0.1:1/mcp", approval=False, tools={"t": {"effect": "read"}})
    offered = classified("srv", server, _tool(hints={"read_only_hint": False}))
    assert offered is not None and (offered.effect, offered.approval) == ("read", False)
    strict = McpServer(command=["s"], tools={"t": {"approval": True}})
    asked = classified("srv", strict, _tool(hints={"read_only_hint": True}))
    assert asked is not None and (asked.effect, asked.approval) == ("read", True)


def test_a_tool_whose_name_cannot_be_a_tool_name_is_left_out() -> None:
    assert classified("srv", SERVER, _tool("has space")) is None
    assert classified("srv", SERVER, _tool("x" * 70)) is None


def test_a_bad_configuration_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ('{"a__b": {"url": "http://h/"}}', '{"a": {}}', '{"a": {"url": "h", "command": ["x"]}}'):
        monkeypatch.setenv("AGENTLOG_MCP_SERVERS", bad)
        with pytest.raises(ValidationError):
            Settings()
    monkeypatch.setenv("AGENTLOG_MCP_SERVERS", '{"a-1": {"command": ["x"], "env": {"K": "v"}}}')
    assert Settings().mcp_servers["a-1"].env == {"K": "v"}


def test_metric_labels_stay_bounded() -> None:
    assert [label("Read", True), label("shop__anything", False), label("made_up", False)] == [
        "Read",
        "mcp",
        "unknown",
    ]
