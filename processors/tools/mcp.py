"""MCP servers' tools beside the built-in ones, under `server__tool` names.

The model worker lists the session's servers (the deployment's AGENTLOG_MCP_SERVERS and the
session's own `mcp_servers`) on the session's first model call and records what it offered
with the answer (`AssistantMessagePayload.mcp_tools`): from then on every call, the
reactor's approvals and the executor read that one list, so replay sees what the model saw.
Each tool's class comes from the configuration, else the server's annotations
(`readOnlyHint` read, `idempotentHint` idempotent_write), else `write`: never rerun, a call
cut short is "outcome unknown". A destructive tool (the spec's default for a tool that is
not read-only) waits for a human unless the configuration says otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from eventstore import events as ev
from eventstore.events import Event
from eventstore.mcp import SEPARATOR, McpEffect, McpServer, McpTool, McpToolConfig
from eventstore.settings import Settings
from eventstore.state import SessionState
from processors.tools.errors import McpUnavailable
from processors.tools.function import TOOL_NAME
from processors.tools.mcp_pool import Pool
from processors.tools.registry import EffectClass, ToolContext, ToolOutput

if TYPE_CHECKING:
    import mcp_types

# The SDK (processors/tools/mcp_client.py) is imported where a server is talked to, not here:
# it takes most of a second to import, and every worker imports this module.

log = logging.getLogger(__name__)

# A listing that takes longer fails the model call that needed it (the turn says why).
LIST_TIMEOUT_S = 30.0
# The key a call's `_meta` carries its idempotency key under (the same on every delivery).
IDEMPOTENCY_META = "io.agentlog/idempotency-key"


def servers_for(settings: Settings, state: SessionState) -> dict[str, McpServer]:
    """The session's servers: the deployment's, and its own over them by name."""
    for name, server in state.config.mcp_servers.items():
        if server.command is not None and not settings.mcp_session_commands:
            raise McpUnavailable(
                f"MCP server {name!r} of the session runs a command, which this deployment does not"
                " allow (AGENTLOG_MCP_SESSION_COMMANDS)"
            )
    return {**settings.mcp_servers, **state.config.mcp_servers}


def classified(server_name: str, server: McpServer, tool: mcp_types.Tool) -> McpTool | None:
    """A listed tool as the session is offered it; None when its name cannot be a tool name."""
    name = f"{server_name}{SEPARATOR}{tool.name}"
    if not TOOL_NAME.match(name):
        log.warning(
            "MCP tool %r of server %r is left out: %r is not a valid tool name", tool.name, server_name, name
        )
        return None
    configured = server.tools.get(tool.name) or McpToolConfig()
    hints = tool.annotations
    effect: McpEffect
    if configured.effect is not None:
        effect = configured.effect
    elif hints is not None and hints.read_only_hint:
        effect = "read"
    elif hints is not None and hints.idempotent_hint:
        effect = "idempotent_write"
    else:
        effect = "write"
    # The spec's default for a tool that changes things is destructive (destructiveHint true).
    destructive = effect not in ("read", "fetch") and (hints is None or hints.destructive_hint is not False)
    approval = next(a for a in (configured.approval, server.approval, destructive) if a is not None)
    schema = {k: v for k, v in tool.input_schema.items() if k != "title"}
    return McpTool(
        name=name,
        server=server_name,
        tool=tool.name,
        description=tool.description or tool.title or "",
        input_schema=schema,
        effect=effect,
        approval=approval,
    )


@dataclass(frozen=True)
class Offer:
    """The MCP tools of one model call, and whether they were listed for it (then they are
    recorded with its answer)."""

    tools: tuple[McpTool, ...] = ()
    new: bool = False

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self.tools]

    def recorded(self, outcome: Event) -> Event:
        """The call's answer, carrying the list when it was listed for this call."""
        if not self.new or not isinstance(outcome, ev.AssistantMessage):
            return outcome
        payload = outcome.payload.model_copy(update={"mcp_tools": list(self.tools)})
        return outcome.model_copy(update={"payload": payload})


@dataclass
class Catalog:
    """The model worker's lister: a server's listing is reused for `mcp_list_ttl_s`."""

    settings: Settings
    cache: dict[str, tuple[float, tuple[McpTool, ...]]] = field(default_factory=dict)

    async def offer(self, state: SessionState) -> Offer:
        """The session's recorded list, or a new listing of its servers (none: no MCP tools)."""
        if state.mcp_tools is not None:
            return Offer(state.mcp_tools)
        servers = servers_for(self.settings, state)
        if not servers:
            return Offer()
        found = await asyncio.gather(*(self._tools_of(n, s) for n, s in sorted(servers.items())))
        allowed = [
            t for group in found for t in group if state.config.tools is None or t.name in state.config.tools
        ]
        return Offer(tuple(sorted(allowed, key=lambda t: t.name)), new=True)

    async def _tools_of(self, name: str, server: McpServer) -> tuple[McpTool, ...]:
        key = f"{name}\n{server.model_dump_json()}"
        hit = self.cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.settings.mcp_list_ttl_s:
            return hit[1]
        from processors.tools.mcp_client import connected, listed

        try:
            async with asyncio.timeout(LIST_TIMEOUT_S), connected(name, server, LIST_TIMEOUT_S) as client:
                tools = await listed(client)
        except TimeoutError as exc:
            raise McpUnavailable(
                f"MCP server {name!r} did not list its tools within {LIST_TIMEOUT_S:g} s"
            ) from exc
        offered = tuple(t for t in (classified(name, server, tool) for tool in tools) if t is not None)
        if len(self.cache) > 1000:
            self.cache.clear()  # per-session servers: keep the cache bounded
        self.cache[key] = (time.monotonic(), offered)
        return offered


@dataclass(frozen=True)
class McpRun:
    """One offered MCP tool as the executor runs it: a call on the pool's connection to its
    server (without a pool, on a connection of its own)."""

    offered: McpTool
    server: McpServer
    pool: Pool | None = None
    uses_workspace: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.offered.name

    @property
    def description(self) -> str:
        return self.offered.description

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.offered.input_schema

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return self.offered.effect

    def time_limit_s(self, settings: Settings) -> float:
        """The executor's outer limit: past the call's own, which reports by class."""
        return settings.tool_timeout_s + 1.0

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Call the tool once; a failure is an error result, "outcome unknown" for a write
        whose request may have reached the server."""
        from processors.tools.mcp_client import as_content, connected

        limit = ctx.settings.tool_timeout_s
        sent = False
        meta: Any = {IDEMPOTENCY_META: ctx.idempotency_key}
        try:
            async with asyncio.timeout(limit):
                if self.pool is None:
                    async with connected(self.offered.server, self.server, limit) as client:
                        sent = True
                        result = await client.call_tool(self.offered.tool, tool_input, meta=meta)
                else:
                    kept = await self.pool.client(self.offered.server, self.server, limit)
                    sent = True
                    result = await _called(kept, self.offered, tool_input, meta)
        except (McpUnavailable, TimeoutError) as exc:
            if sent and self.pool is not None:
                self.pool.drop(self.offered.server, self.server)  # the next call connects afresh
            why = (
                str(exc)
                if isinstance(exc, McpUnavailable)
                else f"{self.name} did not finish within {limit:g} s"
            )
            if sent and self.offered.effect == "write":
                return ToolOutput(
                    f"outcome unknown: {why}; the call may or may not have taken effect."
                    " Check before retrying.",
                    is_error=True,
                )
            return ToolOutput(why, is_error=True)
        return ToolOutput(as_content(result), is_error=bool(result.is_error))


async def _called(
    client: Any, offered: McpTool, tool_input: dict[str, Any], meta: Any
) -> mcp_types.CallToolResult:
    """A call on a kept connection; its failures are the server's (McpUnavailable)."""
    from processors.tools.mcp_client import reason

    try:
        result: mcp_types.CallToolResult = await client.call_tool(offered.tool, tool_input, meta=meta)
    except Exception as exc:
        raise McpUnavailable(f"MCP server {offered.server!r} failed: {reason(exc)}") from exc
    return result


def label(name: str, registered: bool) -> str:
    """A tool's name as a metric label or span name: bounded, since names are model output
    (every MCP tool is `mcp`, anything else unregistered `unknown`)."""
    if registered:
        return name
    return "mcp" if SEPARATOR in name else "unknown"


def tool_for(
    name: str, state: SessionState, settings: Settings, pool: Pool | None = None
) -> McpRun | ToolOutput | None:
    """The executor's MCP tool of this name (None: the session was offered no such tool)."""
    offered = state.mcp_tool(name)
    if offered is None:
        return None
    try:
        server = servers_for(settings, state).get(offered.server)
    except McpUnavailable as exc:
        return ToolOutput(str(exc), is_error=True)
    if server is None:
        return ToolOutput(
            f"MCP server {offered.server!r} of tool {name!r} is no longer configured", is_error=True
        )
    return McpRun(offered, server, pool)
