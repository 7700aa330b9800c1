"""A tiny MCP server for the tests, run as a subprocess: `python -m tests.mcp_server stdio`
or `python -m tests.mcp_server http PORT` (streamable HTTP on 127.0.0.1).

Each tool appends one line per run to `$MCP_TEST_LOG` (when set), so a test counts runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("shop")


def _ran(line: str) -> None:
    where = os.environ.get("MCP_TEST_LOG")
    if where:
        with Path(where).open("a") as out:
            out.write(line + "\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def stock(sku: str) -> str:
    """How many of an item are in stock."""
    _ran(f"stock {sku}")
    return f"{sku}: 7 in stock"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
def charge(order_id: str, cents: int) -> str:
    """Charge an order (not idempotent: every run charges)."""
    _ran(f"charge {order_id} {cents}")
    return f"charged {cents} cents to {order_id}"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def wipe(order_id: str) -> str:
    """Delete an order."""
    _ran(f"wipe {order_id}")
    return f"wiped {order_id}"


@server.tool()
def note(text: str) -> str:
    """Keep a note (no annotations: the spec's defaults, a destructive write)."""
    _ran(f"note {text}")
    return "noted"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def secret() -> str:
    """Answers with a credential (for the redaction test)."""
    return "key: AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
async def slow(seconds: float) -> str:
    """Takes its time (a write: cut short, its outcome is unknown)."""
    _ran(f"slow {seconds}")
    await anyio.sleep(seconds)
    return "done"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def fail(reason: str) -> str:
    """Always raises."""
    raise ValueError(reason)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
