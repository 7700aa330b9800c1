"""The tool registry: each tool's definition for the model and the code that runs it.

Both the model worker (which sends the definitions) and the tool worker (which runs the
tools) build the same registry. A session may allow a subset of the registered tools.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from eventstore import tokens
from eventstore.events import Block
from eventstore.settings import Settings

# How a call may be repeated after a crash (DESIGN.md, "Tools and their idempotency class"):
# `read` and `fetch` run again or reuse a recorded result; `idempotent_write` (an MCP tool
# whose server says repeating it changes nothing more) runs again too; `guarded_write`
# checks the file against the recorded pre- and post-images; `write` is never run twice: a
# start without an outcome is reported as unknown.
EffectClass = Literal["read", "fetch", "idempotent_write", "guarded_write", "write"]

T = TypeVar("T")


async def within(work: Awaitable[T], limit_s: float) -> T:
    """The work's result, or TimeoutError once `limit_s` has passed: the work is cancelled
    then, and not waited for. `asyncio.wait_for` waits for cancelled work to end, so a tool
    that swallows its cancellation would hold its call, its turn and its worker forever."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise TimeoutError
    return task.result()


@dataclass(frozen=True)
class ToolOutput:
    """What a tool run returns to the model: text or content blocks, and whether it failed."""

    content: list[Block] | str
    is_error: bool = False


@dataclass(frozen=True)
class ToolContext:
    """Where and how a call runs: the session's workspace (a directory owned by this
    executor), the settings, and the session's permissions. Tools written with `@tool`
    get it too: the session and tenant ids, the workspace, a logger bound to the call and
    the call's idempotency key."""

    session_id: str
    workspace: Path
    settings: Settings
    allow_network: bool = False
    # The call's tool_use id (a key for tools that must join, not repeat, earlier work).
    call_id: str = ""
    # The session's tenant (a tool calling the api acts for it).
    tenant_id: str = "default"
    # The call's stable key, the same on every redelivery of the call: pass it to an
    # external API's idempotency key and the call is exactly-once end to end.
    idempotency_key: str = ""
    # A logger whose records carry the session, the call and its key.
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logging.getLogger("agentlog.tools"))
    )


class Tool(Protocol):
    """A tool: its name, description and JSON schema for the model, and how to run it."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def input_schema(self) -> dict[str, Any]: ...

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        """The class of this call (Bash decides per command)."""
        ...

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Run once with the model's input; errors the model should read are returned, not raised."""
        ...


class Echo:
    """Returns its `text` input: a harmless tool for demos and tests."""

    name = "Echo"
    uses_workspace = False
    description = "Returns the given text unchanged."
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the text to return"}},
        "required": ["text"],
    }

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        text = tool_input.get("text")
        if not isinstance(text, str):
            return ToolOutput("Echo needs a string `text` input", is_error=True)
        return ToolOutput(text)


class Registry:
    """Registered tools by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add a tool (replacing one of the same name)."""
        self.tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def allowed(self, allow: Iterable[str] | None) -> list[Tool]:
        """The registered tools a session allows (all when it names none)."""
        if allow is None:
            return list(self.tools.values())
        names = set(allow)
        return [t for n, t in self.tools.items() if n in names]

    def needing_approval(self) -> frozenset[str]:
        """Tools whose every call waits for a human's approval (`@tool(approval=True)`)."""
        return frozenset(n for n, t in self.tools.items() if getattr(t, "approval", False))

    def definitions(self, allow: Iterable[str] | None) -> list[dict[str, Any]]:
        """The tool definitions sent to the model, in a stable order."""
        return [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in sorted(self.allowed(allow), key=lambda t: t.name)
        ]

    def definition_tokens(self) -> dict[str, int]:
        """The estimated tokens of each tool's definition (the reactor sizes calls with them)."""
        return {d["name"]: tokens.estimate(d) for d in self.definitions(None)}


def default_registry() -> Registry:
    """The built-in tools, which every worker has unless configured otherwise."""
    from processors.tools.bash import Bash
    from processors.tools.files import Edit, Read, Write
    from processors.tools.search import Glob, Grep
    from processors.tools.task import Task
    from processors.tools.web import WebFetch

    return Registry([Echo(), Read(), Write(), Edit(), Grep(), Glob(), Bash(), WebFetch(), Task()])
