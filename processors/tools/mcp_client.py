"""Talking to one MCP server with the official SDK: connect (stdio or streamable HTTP),
list its tools, call one, and turn its answer into a tool result.

A connection lives for the block that opened it (a listing, or as long as the executor's
pool keeps it: mcp_pool.py). Every SDK failure leaves here as an McpUnavailable naming the
server, never as the SDK's own exception.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from eventstore.events import Block
from eventstore.mcp import McpServer
from processors.tools.errors import McpUnavailable, ToolError


@asynccontextmanager
async def connected(name: str, server: McpServer, timeout_s: float) -> AsyncIterator[Client]:
    """A client session with the server, for the length of the block."""
    try:
        if server.command is not None:
            # The server gets the SDK's small default environment plus its own `env`: never
            # this process's (database URLs, tokens).
            target: Any = StdioServerParameters(
                command=server.command[0], args=server.command[1:], env=server.env or None
            )
            async with Client(target, read_timeout_seconds=timeout_s, cache=None) as client:
                yield client
        else:
            assert server.url is not None
            timeout = httpx2.Timeout(min(timeout_s, 30.0), read=timeout_s)
            async with (
                httpx2.AsyncClient(headers=server.headers, timeout=timeout) as http,
                Client(
                    streamable_http_client(server.url, http_client=http),
                    read_timeout_seconds=timeout_s,
                    cache=None,
                ) as client,
            ):
                yield client
    except ToolError:
        raise
    except Exception as exc:
        raise McpUnavailable(f"MCP server {name!r} failed: {reason(exc)}") from exc


def reason(exc: BaseException) -> str:
    """The first leaf of an exception group, as one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def listed(client: Client) -> list[mcp_types.Tool]:
    """Every tool the server lists, page after page."""
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools


def as_content(result: mcp_types.CallToolResult) -> list[Block] | str:
    """A call's result for the model: its text (one string, so size limits and redaction see
    it), or content blocks when it holds an image."""
    blocks: list[Block] = []
    for part in result.content:
        if isinstance(part, mcp_types.TextContent):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, mcp_types.ImageContent):
            source = {"type": "base64", "media_type": part.mime_type, "data": part.data}
            blocks.append({"type": "image", "source": source})
        else:
            shown = part.model_dump(mode="json", by_alias=True, exclude_none=True)
            blocks.append({"type": "text", "text": json.dumps(shown, ensure_ascii=False)})
    if not blocks and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    if all(b["type"] == "text" for b in blocks):
        return "\n".join(str(b["text"]) for b in blocks)
    return blocks
