"""MCP servers as the configuration names them, and the tools a session was offered from them.

Pure values: a server is a command (stdio) or a URL (streamable HTTP), configured per
deployment (AGENTLOG_MCP_SERVERS) or per session (`mcp_servers`). What a session's first
model call was offered is recorded in its assistant message (`mcp_tools`), so every later
call, the reactor's approvals and the executor's classes read the same list on replay.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# How a call may be repeated after a crash (processors/tools/registry.py, EffectClass):
# `read` and `idempotent_write` run again, `write` never does ("outcome unknown").
McpEffect = Literal["read", "fetch", "idempotent_write", "write"]

# A server's name is the prefix of its tools' names (`server__tool`): no `__` inside it.
SERVER_NAME = re.compile(r"^[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*$")
SEPARATOR = "__"


class McpToolConfig(BaseModel):
    """What the configuration says of one tool, over the server's annotations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    effect: McpEffect | None = None
    approval: bool | None = None


class McpServer(BaseModel):
    """One MCP server: `command` (stdio, with `env`) or `url` (streamable HTTP, with `headers`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = Field(default=None, pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    # Every tool of the server waits for a human (True), never does (False), or as its
    # annotations say (None: a destructive tool waits).
    approval: bool | None = None
    # Per tool (by the server's name for it): its class and approval, over the annotations.
    tools: dict[str, McpToolConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (stdio) or `url` (streamable HTTP), not both or neither")
        if self.command is not None and not self.command[0]:
            raise ValueError("`command` starts with the program to run")
        if self.url is not None and self.env:
            raise ValueError("`env` is for a `command` server; an HTTP server takes `headers`")
        return self


def check_names(servers: dict[str, Any]) -> dict[str, Any]:
    """Refuse a server name that cannot prefix a tool name."""
    for name in servers:
        if len(name) > 32 or not SERVER_NAME.match(name):
            raise ValueError(
                f"MCP server name {name!r} must be 1 to 32 letters and digits, with single `-` or `_`"
                " between them"
            )
    return servers


class McpTool(BaseModel):
    """One tool a session was offered: its name for the model, where it lives, its class."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # `server__tool`, as the model calls it
    server: str
    tool: str  # the server's own name for it
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    effect: McpEffect = "write"
    approval: bool = True

    def definition(self) -> dict[str, Any]:
        """The tool's definition for the Messages API."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}
