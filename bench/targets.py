"""Issue 15's targets, each beside the figure a run reached: from bench.compare's runs and,
if given, bench.parts' rows (its --json file). Markdown rows, to paste into the README.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare_agentlog import STACK, idle_total
from bench.workload import Run

WORKERS = ("broker", "api", "reactor", "model-worker", "tool-worker", "subagent-worker", "projector")


@dataclass(frozen=True)
class Target:
    """One target: what it asks, the figure reached, whether it is met."""

    asks: str
    reached: str
    met: bool | None  # None: reported, no target set

    def row(self) -> str:
        met = "—" if self.met is None else "yes" if self.met else "**no**"
        return f"| {self.asks} | {self.reached} | {met} |"


def _throughput(runs: list[Run]) -> Target | None:
    zero = [r for r in runs if r.workload.latency_ms == 0]
    mine = max((r for r in zero if r.system == "agentlog"), key=lambda r: r.workload.sessions, default=None)
    theirs = [r for r in zero if r.system == "LangGraph" and mine and r.workload == mine.workload]
    if mine is None or not theirs:
        return None
    ratio = mine.turns_per_s / theirs[0].turns_per_s
    return Target(
        f"turns/s at L = 0, {mine.workload.sessions} sessions × {mine.workload.turns} turns:"
        " ≥ 10× LangGraph's",
        f"{mine.turns_per_s:,.1f} vs {theirs[0].turns_per_s:,.1f}: {ratio:.2f}×",
        ratio >= 10,
    )


def _latency(runs: list[Run]) -> Target | None:
    at = [r for r in runs if r.system == "agentlog" and r.workload.latency_ms > 0]
    run = min(at, key=lambda r: r.workload.sessions, default=None)
    if run is None:
        return None
    over = run.latency_ms(0.5) - run.workload.model_s * 1000
    return Target(
        f"turn latency p50 with {run.workload.sessions} sessions: ≤ 50 ms above the model's"
        f" {run.workload.model_s * 1000:.0f} ms",
        f"{run.latency_ms(0.5):,.0f} ms ({over:+,.0f} ms)",
        over <= 50,
    )


def _memory(runs: list[Run]) -> Target | None:
    run = max((r for r in runs if r.system == "agentlog"), key=lambda r: r.workload.sessions, default=None)
    if run is None:
        return None
    peaks = {name: peak for name, (_, peak) in run.rss_mb.items() if name in WORKERS}
    shown = ", ".join(f"{name} {mb:.0f}" for name, mb in peaks.items())
    return Target(f"memory at {run.workload.sessions} sessions at once (peak RSS MB)", shown, None)


def _part(rows: list[dict[str, Any]], part: str, measure: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["part"] == part and r["measure"] == measure), None)


def _parts(rows: list[dict[str, Any]]) -> list[Target]:
    out: list[Target] = []
    ingest = _part(rows, "ingest", "POST message → acked")
    if ingest:
        out.append(Target("ingest ≥ 2,000 POST/s", f"{ingest['value']:,.0f} POST/s", ingest["value"] >= 2000))
    projection = _part(rows, "projection", "log → Postgres, fresh projector")
    if projection:
        value = projection["value"]
        out.append(Target("projection ≥ 25,000 events/s", f"{value:,.0f} events/s", value >= 25_000))
    load = _part(rows, "replay", "one session from Postgres")
    found = re.match(r"(\d+) events", load["notes"]) if load else None
    events = int(found.group(1)) if found else 0
    limits: list[tuple[str, dict[str, Any] | None, float]] = [
        ("folded", _part(rows, "replay", "fold alone (in memory)"), 2),
        ("loaded from Postgres", load, 10),
    ]
    for what, row, limit in limits:
        if row and events:
            ms = events / row["value"] * 1000
            out.append(
                Target(f"a {events:,}-event session {what} ≤ {limit:g} ms", f"{ms:.1f} ms", ms <= limit)
            )
    return out


def table(runs: list[Run], idle_pct: dict[str, float], parts_json: Path | None) -> list[str]:
    """Markdown rows: each target, the figure reached, met or not."""
    found: list[Target | None] = [_throughput(runs), _latency(runs)]
    if parts_json is not None:
        found += _parts(json.loads(parts_json.read_text())["rows"])
    if idle_pct:
        total = idle_total(idle_pct)
        top = sorted(((k, v) for k, v in idle_pct.items() if k != STACK), key=lambda kv: -kv[1])[:2]
        shown = ", ".join(f"{name} {pct:.1f}" for name, pct in top)
        found.append(Target("an idle stack < 3 % of a core", f"{total:.1f} % ({shown})", total < 3))
    found.append(_memory(runs))
    return ["| target | reached | met |", "|---|---|---|", *(t.row() for t in found if t is not None)]
