"""Connections to MCP servers kept open across calls, one per server configuration.

Starting a stdio server costs about 0.75 s and an HTTP session about 28 ms, against under
2 ms for a call on a connection kept open (`python -m bench.mcp_tools`). Each connection is
held by a task of its own (the SDK's cancel scopes must be entered and left in one task);
calls share it (JSON-RPC answers by request id). A connection idle past `idle_s`, or one a
call failed on, is closed; the next call connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventstore.mcp import McpServer
from processors.tools.errors import McpUnavailable

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger(__name__)


@dataclass
class _Held:
    client: Client
    stop: asyncio.Event
    task: asyncio.Task[None]
    used_at: float = field(default_factory=time.monotonic)


@dataclass
class Pool:
    """The executor's open connections, by server name and configuration."""

    idle_s: float = 60.0
    held: dict[str, _Held] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def client(self, name: str, server: McpServer, timeout_s: float) -> Client:
        """An open connection to the server (made now if there is none)."""
        self._close_idle()
        key = _key(name, server)
        async with self.locks.setdefault(key, asyncio.Lock()):
            held = self.held.get(key)
            if held is not None and not held.task.done():
                held.used_at = time.monotonic()
                return held.client
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            stop = asyncio.Event()
            task = asyncio.create_task(_hold(name, server, timeout_s, ready, stop), name=f"mcp {name}")
            try:
                client = await asyncio.wait_for(asyncio.shield(ready), timeout_s)
            except BaseException as exc:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                if isinstance(exc, TimeoutError):
                    raise McpUnavailable(
                        f"MCP server {name!r} did not answer within {timeout_s:g} s"
                    ) from exc
                raise
            self.held[key] = _Held(client, stop, task)
            return client

    def drop(self, name: str, server: McpServer) -> None:
        """Close the server's connection (a call failed on it: the next one starts afresh)."""
        held = self.held.pop(_key(name, server), None)
        if held is not None:
            held.stop.set()

    def _close_idle(self) -> None:
        now = time.monotonic()
        for key, held in list(self.held.items()):
            if held.task.done() or now - held.used_at > self.idle_s:
                del self.held[key]
                held.stop.set()
        for key, lock in list(self.locks.items()):  # sessions' own servers come and go
            if key not in self.held and not lock.locked():
                del self.locks[key]

    async def close(self) -> None:
        """Close every connection (stdio servers stop), waiting a little for each."""
        held, self.held = list(self.held.values()), {}
        for one in held:
            one.stop.set()
        if held:
            await asyncio.wait([h.task for h in held], timeout=5)


def _key(name: str, server: McpServer) -> str:
    return f"{name}\n{server.model_dump_json()}"


async def _hold(
    name: str, server: McpServer, timeout_s: float, ready: asyncio.Future[Client], stop: asyncio.Event
) -> None:
    """Open the connection, hand it over, keep it until told to stop (or until it breaks:
    then the task ends, and the next call connects again)."""
    from processors.tools.mcp_client import connected

    try:
        async with connected(name, server, timeout_s) as client:
            ready.set_result(client)
            await stop.wait()
    except Exception as exc:
        if not ready.done():
            ready.set_exception(exc)
        else:
            log.info("MCP server %r: its connection closed: %s", name, exc)
