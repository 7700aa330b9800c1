"""Errors of tools and of loading them; each says whether a retry can help.

AgentlogError (eventstore.errors)
├── ToolError          raised by a tool: its message answers the model as an error result
│   └── McpUnavailable an MCP server that cannot be started, reached, or does not answer
└── ToolConfigError    a tool that cannot be defined or loaded (at import or start-up)
"""

from __future__ import annotations

from eventstore.errors import AgentlogError


class ToolError(AgentlogError):
    """Raise it in a tool to answer the model with this message (an error result it can read)."""

    retriable = False


class ToolConfigError(AgentlogError):
    """A decorated function that cannot be a tool, a module that does not load, a name clash:
    raised when the tool is defined or when a worker starts, never while a call runs."""

    retriable = False


class McpUnavailable(ToolError):
    """An MCP server that cannot be started, reached, or does not answer as the protocol says."""

    retriable = True
