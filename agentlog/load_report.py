"""What a load test reports: percentiles and the summary (pure), and its three forms: a rich
table, a JSON file and a PNG histogram of turn latencies (matplotlib, optional)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentlog.load import LoadResult, Tokens, TurnSample


def _total_cost(samples: Sequence[TurnSample]) -> str | None:
    """The turns' summed cost; None (unknown) if one of them could not be priced."""
    costs = [s.cost_usd for s in samples]
    if any(c is None for c in costs):
        return None
    return str(sum((c for c in costs if c is not None), Decimal(0)))


QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation between closest ranks, as numpy's
    default does; monotone in q. ValueError on no samples or q outside 0–100."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0 and 100, not {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(samples_s: Sequence[float]) -> dict[str, float | int | None]:
    """Percentiles, mean, min and max in milliseconds (None when there are no samples)."""
    ms = [s * 1000 for s in samples_s]
    if not ms:
        return {**dict.fromkeys((*QUANTILES, "mean", "min", "max")), "count": 0}
    values = {name: percentile(ms, q) for name, q in QUANTILES.items()}
    values.update(mean=sum(ms) / len(ms), min=min(ms), max=max(ms))
    return {**{k: round(v, 1) for k, v in values.items()}, "count": len(ms)}


def summarize(result: LoadResult, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able summary of a run (what `--output` writes)."""
    samples = result.samples
    done = [s for s in samples if s.ok]
    tokens = sum((s.tokens for s in samples), Tokens())
    errors = [f"{s.session_id}: {s.error}" for s in samples if not s.ok] + list(result.setup_errors)
    return {
        "sessions": result.plan.sessions,
        "turns_per_session": result.plan.turns,
        "turns": len(samples),
        "completed": len(done),
        "errors": result.errors,
        "error_samples": errors[:20],
        "model": result.plan.model,
        "wall_s": round(result.wall_s, 3),
        "throughput_turns_per_s": round(len(done) / result.wall_s, 2) if result.wall_s > 0 else None,
        "latency_ms": distribution([s.latency_s for s in done]),
        "first_event_ms": distribution([s.first_event_s for s in samples if s.first_event_s is not None]),
        "first_output_ms": distribution([s.first_output_s for s in samples if s.first_output_s is not None]),
        "tokens": {
            "input": tokens.input,
            "output": tokens.output,
            "cache_read": tokens.cache_read,
            "cache_write": tokens.cache_write,
        },
        "cost_usd": _total_cost(samples),
        "streams": result.plan.streams,
        "config": config or {},
        "latencies_ms": [round(s.latency_s * 1000, 1) for s in done],
    }


def _three(dist: dict[str, Any]) -> str:
    if not dist["count"]:
        return "-"
    return " / ".join(f"{dist[k]:,.0f}" for k in QUANTILES) + f" ms  (n={dist['count']})"


def table(summary: dict[str, Any]) -> Table:
    """The summary as a rich table."""
    t = summary["tokens"]
    title = f"agentlog bench load: {summary['sessions']} sessions × {summary['turns_per_session']} turns"
    out = Table(title=f"{title}, {summary['model']}")
    out.add_column("measure")
    out.add_column("result", justify="right")
    rows = [
        ("turns completed / posted", f"{summary['completed']} / {summary['turns']}"),
        ("errors", str(summary["errors"])),
        ("wall time", f"{summary['wall_s']:.2f} s"),
        ("throughput", f"{summary['throughput_turns_per_s'] or 0:.2f} turns/s"),
        ("turn latency p50 / p95 / p99", _three(summary["latency_ms"])),
        ("time to first event p50 / p95 / p99", _three(summary["first_event_ms"])),
        ("time to first output p50 / p95 / p99", _three(summary["first_output_ms"])),
        ("tokens input / output", f"{t['input']:,} / {t['output']:,}"),
        ("tokens cache read / write", f"{t['cache_read']:,} / {t['cache_write']:,}"),
        (
            "cost",
            "unknown (a model without a price)" if summary["cost_usd"] is None else f"${summary['cost_usd']}",
        ),
    ]
    for row in rows:
        out.add_row(*row)
    return out


def write_json(summary: dict[str, Any], path: Path) -> None:
    """Write the summary as indented JSON."""
    path.write_text(json.dumps(summary, indent=2) + "\n")


def write_png(summary: dict[str, Any], path: Path, console: Console) -> bool:
    """A histogram of turn latencies with p50/p95/p99 marked; False (and a warning) when
    matplotlib is not installed (`pip install 'agentlog[load]'`)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        console.print(
            f"[yellow]warning:[/] matplotlib is not installed, so no histogram was written to {path}"
            " (pip install 'agentlog[load]')"
        )
        return False
    latencies = summary["latencies_ms"]
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    axes.hist(latencies, bins=min(50, max(5, len(latencies) // 4)), color="#4c78a8")
    for name, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        value = summary["latency_ms"][name]
        if value is not None:
            axes.axvline(value, color="#e45756", linestyle=style, label=f"{name} {value:,.0f} ms")
    axes.set_xlabel("turn latency (ms), POST to finished turn")
    axes.set_ylabel("turns")
    axes.set_title(
        f"{summary['sessions']} sessions × {summary['turns_per_session']} turns, {summary['model']}"
    )
    if latencies:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return True
