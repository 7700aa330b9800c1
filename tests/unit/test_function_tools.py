"""`@tool`: the schema from the signature and docstring, validation before the call, sync and
async functions, results and errors; discovery by module and entry point, and its clashes."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from agentlog import ToolContext, ToolError, tool
from agentlog.testing import tool_context
from eventstore.settings import Settings
from processors.tools import discovery
from processors.tools.errors import ToolConfigError
from processors.tools.function import FunctionTool
from tests import custom_tools


def ctx(tmp_path: Path) -> ToolContext:
    return tool_context(tmp_path, idempotency_key="key-1", session_id="s")


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    @tool(effect="write", approval=True, timeout_s=30)
    async def refund(order_id: str, amount_cents: int, ctx: ToolContext, note: str = "") -> str:
        """Refund part of an order.

        Args:
            order_id: the order to refund.
            amount_cents (int): how much, in cents,
                at most the order's total.

        Returns:
            what was refunded.
        """
        return "ok"

    assert isinstance(refund, FunctionTool)
    assert (refund.name, refund.effect, refund.approval, refund.timeout_s) == ("refund", "write", True, 30)
    assert refund.description == "Refund part of an order."
    assert refund.input_schema == {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "the order to refund."},
            "amount_cents": {
                "type": "integer",
                "description": "how much, in cents, at most the order's total.",
            },
            "note": {"type": "string", "default": ""},
        },
        "required": ["order_id", "amount_cents"],
        "additionalProperties": False,
    }
    assert refund.context_param == "ctx"


def test_annotated_fields_and_defaults_carry_into_the_schema() -> None:
    @tool(name="Count-Words", effect="read")
    def count(text: Annotated[str, Field(description="the text", max_length=10)], top: int = 3) -> int:
        return len(text.split())

    assert count.name == "Count-Words" and count.description == "The Count-Words tool."
    props = count.input_schema["properties"]
    assert props["text"] == {"type": "string", "description": "the text", "maxLength": 10}
    assert props["top"] == {"type": "integer", "default": 3}
    assert count("a b c") == 3  # the function stays callable as it was


async def test_bad_input_is_an_error_result_the_model_can_read(tmp_path: Path) -> None:
    ran: list[int] = []

    @tool(effect="read")
    def add(a: int, b: int) -> int:
        ran.append(1)
        return a + b

    out = await add.run({"a": "two", "c": 1}, ctx(tmp_path))
    assert out.is_error and ran == []
    assert out.content == (
        "invalid input for add: a: Input should be a valid integer, unable to parse string as an"
        ' integer (got "two"); b: Field required; c: Extra inputs are not permitted (got 1)'
    )
    assert (await add.run({"a": 2, "b": "3"}, ctx(tmp_path))).content == "5"


async def test_sync_and_async_functions_get_the_context_and_answer(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str]] = []

    @tool(effect="read")
    def sync_one(order_id: str, context: ToolContext) -> dict[str, Any]:
        seen.append((order_id, context.idempotency_key, context.session_id))
        return {"order": order_id, "items": [1, 2]}

    @tool
    async def async_one(ctx: ToolContext) -> str:
        await asyncio.sleep(0)
        return f"in {ctx.workspace.name}"

    assert (
        await sync_one.run({"order_id": "o1"}, ctx(tmp_path))
    ).content == '{"order": "o1", "items": [1, 2]}'
    assert seen == [("o1", "key-1", "s")]
    assert async_one.effect == "write"  # the default: never run twice
    assert (await async_one.run({}, ctx(tmp_path))).content == f"in {tmp_path.name}"


async def test_a_tool_error_is_the_result_and_a_slow_write_is_outcome_unknown(tmp_path: Path) -> None:
    @tool(effect="read")
    def missing(order_id: str) -> str:
        raise ToolError(f"no order {order_id}")

    @tool(effect="write", timeout_s=0.05)
    async def slow_write() -> str:
        await asyncio.sleep(5)
        return "never"

    @tool(effect="read", timeout_s=0.05)
    async def slow_read() -> str:
        await asyncio.sleep(5)
        return "never"

    out = await missing.run({"order_id": "o9"}, ctx(tmp_path))
    assert (out.content, out.is_error) == ("no order o9", True)
    out = await slow_write.run({}, ctx(tmp_path))
    assert out.is_error and str(out.content).startswith(
        "outcome unknown: slow_write did not finish within 0.05 s"
    )
    out = await slow_read.run({}, ctx(tmp_path))
    assert (out.content, out.is_error) == ("slow_read did not finish within 0.05 s and was stopped", True)
    assert slow_read.time_limit_s(Settings()) > 0.05  # the executor's bound is outside the tool's own


def test_what_cannot_be_a_tool_is_refused_when_it_is_defined() -> None:
    with pytest.raises(
        ToolConfigError, match="must be one of read, fetch, idempotent_write, guarded_write, write"
    ):
        tool(effect="delete")  # type: ignore[call-overload]
    with pytest.raises(ToolConfigError, match="must match"):
        tool(name="no spaces")(lambda: "x")
    with pytest.raises(ToolConfigError, match="needs a type annotation"):

        @tool
        def untyped(x) -> str:  # type: ignore[no-untyped-def]
            return "x"

    with pytest.raises(ToolConfigError, match="ordinary named parameter"):

        @tool
        def star(*args: str) -> str:
            return "x"


async def test_a_guarded_write_asks_its_check_whether_a_call_took_effect(
    tmp_path: Path, fake_module: types.ModuleType
) -> None:
    @tool(effect="guarded_write")
    def put(key: str, value: int) -> str:
        return "put"

    fake_module.put = put  # type: ignore[attr-defined]
    with pytest.raises(ToolConfigError, match=r"without a check: decorate one with @put\.check"):
        discovery.load_registry(["fake_user_tools"])
    with pytest.raises(ToolConfigError, match="its check takes 'other', which the tool does not"):
        put.check(lambda key, other: True)
    store: dict[str, int] = {}

    @put.check
    def is_put(key: str, value: int) -> bool:
        if key == "broken":
            raise OSError("cannot tell")
        return store.get(key) == value

    assert discovery.load_registry(["fake_user_tools"]).get("put") is put
    store["a"] = 1
    assert await put.confirm({"key": "a", "value": 1}, ctx(tmp_path)) is True
    assert await put.confirm({"key": "a", "value": 2}, ctx(tmp_path)) is False
    assert await put.confirm({"key": "broken", "value": 2}, ctx(tmp_path)) is None
    assert await put.confirm({"key": "a"}, ctx(tmp_path)) is False  # a wrong input never ran


@pytest.fixture
def fake_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("fake_user_tools")
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_modules_add_their_tools_to_the_built_in_ones(fake_module: types.ModuleType) -> None:
    registry = discovery.load_registry(["tests.custom_tools"])
    assert {"Read", "Bash", "charge", "lookup", "close_account", "set_price"} <= set(registry.tools)
    assert registry.get("charge") is custom_tools.charge
    assert registry.needing_approval() == {"close_account"}
    # The same tool reached twice is one tool.
    fake_module.charge = custom_tools.charge  # type: ignore[attr-defined]
    assert (
        discovery.load_registry(["tests.custom_tools", "fake_user_tools"]).get("charge")
        is custom_tools.charge
    )


def test_a_clash_or_a_bad_module_stops_the_start(fake_module: types.ModuleType) -> None:
    fake_module.read = tool(name="Read", effect="read")(lambda: "mine")  # type: ignore[attr-defined]
    with pytest.raises(ToolConfigError, match="'Read' has the name of a built-in tool"):
        discovery.load_registry(["fake_user_tools"])
    fake_module.read = tool(name="charge")(lambda: "mine")  # type: ignore[attr-defined]
    with pytest.raises(ToolConfigError, match="'charge' is defined twice"):
        discovery.load_registry(["tests.custom_tools", "fake_user_tools"])
    with pytest.raises(ToolConfigError, match="does not import: ModuleNotFoundError"):
        discovery.load_registry(["no_such_module_here"])
    with pytest.raises(ToolConfigError, match="defines no @tool function"):
        discovery.load_registry(["logging"])


def test_entry_points_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    points = [
        EntryPoint("charge", "tests.custom_tools:charge", discovery.ENTRY_POINT_GROUP),
        EntryPoint("shop", "tests.custom_tools", discovery.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(discovery, "entry_points", lambda group: points if group == points[0].group else [])
    assert {"charge", "lookup", "close_account"} <= set(discovery.load_registry().tools)
    points.append(EntryPoint("bad", "logging:INFO", discovery.ENTRY_POINT_GROUP))
    with pytest.raises(ToolConfigError, match="neither a module, a @tool function nor a tool"):
        discovery.load_registry()


def test_tool_modules_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLOG_TOOL_MODULES", "tests.custom_tools, shop.tools,")
    assert Settings().tool_modules == ["tests.custom_tools", "shop.tools"]


def test_the_context_logger_is_usable_without_a_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, "agentlog.tools"):
        ctx(tmp_path).log.info("hello")
    assert caplog.messages == ["hello"]


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (["worker", "tools"], {"AGENTLOG_TOOL_MODULES": "no_such_module_here"}, "does not import"),
        (
            ["up"],
            {"AGENTLOG_TOOL_MODULES": "logging"},
            "module 'logging' (AGENTLOG_TOOL_MODULES) defines no @tool",
        ),
        (["api"], {"AGENTLOG_AGENTS": "/nonexistent/agents.toml"}, "agents file /nonexistent/agents.toml"),
    ],
)
def test_the_commands_refuse_to_start_with_a_bad_tool_or_agents_file(
    argv: list[str], env: dict[str, str], said: str
) -> None:
    from typer.testing import CliRunner

    from agentlog.cli import app

    result = CliRunner().invoke(app, argv, env=env)
    assert result.exit_code == 2 and said in result.output, result.output
