"""The tool registry: each tool's definition for the model and the code that runs it.

Both the model worker (which sends the definitions) and the tool worker (which runs the
tools) build the same registry. A session may allow a subset of the registered tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from eventstore.events import Block


@dataclass(frozen=True)
class ToolOutput:
    """What a tool run returns to the model: text or content blocks, and whether it failed."""

    content: list[Block] | str
    is_error: bool = False


class Tool(Protocol):
    """A tool: its name, description and JSON schema for the model, and how to run it."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def input_schema(self) -> dict[str, Any]: ...

    async def run(self, tool_input: dict[str, Any]) -> ToolOutput:
        """Run once with the model's input; errors the model should read are returned, not raised."""
        ...


class Echo:
    """Returns its `text` input: a harmless tool for demos and tests."""

    name = "Echo"
    description = "Returns the given text unchanged."
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "the text to return"}},
        "required": ["text"],
    }

    async def run(self, tool_input: dict[str, Any]) -> ToolOutput:
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

    def definitions(self, allow: Iterable[str] | None) -> list[dict[str, Any]]:
        """The tool definitions sent to the model, in a stable order."""
        return [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in sorted(self.allowed(allow), key=lambda t: t.name)
        ]


def default_registry() -> Registry:
    """The tools every worker has unless configured otherwise."""
    return Registry([Echo()])
