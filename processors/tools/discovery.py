"""Finding users' tools: the `agentlog.tools` entry points and the modules of
AGENTLOG_TOOL_MODULES, added to the built-in tools.

The reactor, the model worker and the tool executor each load the same set at start-up.
Anything wrong (a module that does not import, a name taken by a built-in tool or by
another tool) stops the worker there with a message saying what, never a call later.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from processors.tools.errors import ToolConfigError
from processors.tools.function import FunctionTool
from processors.tools.registry import Registry, Tool, default_registry

ENTRY_POINT_GROUP = "agentlog.tools"


def load_registry(modules: Iterable[str] = ()) -> Registry:
    """The built-in tools and every discovered one; a name clash is a ToolConfigError."""
    registry = default_registry()
    builtin = set(registry.tools)
    origins: dict[str, str] = {}
    for origin, found in discovered(modules):
        existing = registry.get(found.name)
        if existing is found:
            continue  # the same tool reached twice (an entry point and a module, say)
        if found.name in builtin:
            raise ToolConfigError(
                f"{origin}: tool {found.name!r} has the name of a built-in tool; name it otherwise"
                " (@tool(name=...))"
            )
        if existing is not None:
            raise ToolConfigError(
                f"{origin}: tool {found.name!r} is defined twice (also in {origins[found.name]})"
            )
        if isinstance(found, FunctionTool):
            found.ready()
        registry.register(found)
        origins[found.name] = origin
    return registry


def discovered(modules: Iterable[str] = ()) -> Iterator[tuple[str, Tool]]:
    """(where it came from, tool) for the entry points' tools, then the modules'."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {point.name} = {point.value!r} (group {ENTRY_POINT_GROUP})"
        try:
            loaded = point.load()
        except Exception as exc:
            raise ToolConfigError(f"{origin} does not load: {type(exc).__name__}: {exc}") from exc
        yield from _tools_of(loaded, origin)
    for name in modules:
        origin = f"module {name!r} (AGENTLOG_TOOL_MODULES)"
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ToolConfigError(f"{origin} does not import: {type(exc).__name__}: {exc}") from exc
        yield from _tools_of(module, origin)


def _tools_of(loaded: Any, origin: str) -> Iterator[tuple[str, Tool]]:
    """The tools an entry point or module names: a module's @tool functions, one tool, or a list."""
    if isinstance(loaded, ModuleType):
        found = [v for v in vars(loaded).values() if isinstance(v, FunctionTool)]
        if not found:
            raise ToolConfigError(f"{origin} defines no @tool function")
        for one in found:
            yield origin, one
    elif isinstance(loaded, list | tuple):
        for item in loaded:
            yield from _tools_of(item, origin)
    elif _is_tool(loaded):
        yield origin, loaded
    else:
        raise ToolConfigError(f"{origin} is {loaded!r}: neither a module, a @tool function nor a tool")


def _is_tool(value: Any) -> bool:
    """A @tool function, or an object with the Tool port's members (a class-based tool)."""
    members = ("name", "description", "input_schema", "effect_class", "run")
    return isinstance(value, FunctionTool) or all(hasattr(value, m) for m in members)
