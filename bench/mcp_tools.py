"""What a tool of an MCP server costs per call, by transport: the test server of
tests/mcp_server.py over stdio and over streamable HTTP on loopback, on a connection opened
for the call and on one kept open (as the executor's pool does, processors/tools/mcp_pool.py).
Prints one table. Never a test.

    python -m bench.mcp_tools [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentlog.devstack import free_port
from eventstore.mcp import McpServer
from eventstore.settings import Settings
from processors.tools.mcp import McpRun, classified
from processors.tools.mcp_client import connected, listed
from processors.tools.registry import ToolContext

SERVER = Path(__file__).parents[1] / "tests" / "mcp_server.py"


async def measure(name: str, server: McpServer, calls: int) -> list[str]:
    """Median ms of a listing, of a call on its own connection, and of a call on a kept one."""
    lists, fresh, kept = [], [], []
    for _ in range(calls):
        started = time.perf_counter()
        async with connected(name, server, 30) as client:
            tools = await listed(client)
        lists.append(time.perf_counter() - started)
    stock = next(t for t in (classified(name, server, tool) for tool in tools) if t and t.tool == "stock")
    run = McpRun(stock, server)
    ctx = ToolContext(session_id="bench", workspace=Path("."), settings=Settings(), idempotency_key="k")
    for _ in range(calls):
        started = time.perf_counter()
        out = await run.run({"sku": "a"}, ctx)
        fresh.append(time.perf_counter() - started)
        assert not out.is_error, out
    async with connected(name, server, 30) as client:
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool("stock", {"sku": "a"})
            kept.append(time.perf_counter() - started)
    return [name, *(f"{statistics.median(x) * 1000:.1f}" for x in (lists, fresh, kept))]


def _listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the HTTP server did not start")


async def both(calls: int, url: str) -> list[list[str]]:
    return [
        await measure("stdio", McpServer(command=[sys.executable, str(SERVER), "stdio"]), calls),
        await measure("http", McpServer(url=url), calls),
    ]


def main(calls: int) -> None:
    port = free_port()
    http = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _listening(port)
        rows = asyncio.run(both(calls, f"http://127.0.0.1:{port}/mcp"))
    finally:
        http.terminate()
        http.wait(10)
    table = Table("transport", "list ms", "call ms (own connection)", "call ms (kept connection)")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    main(parser.parse_args().calls)
