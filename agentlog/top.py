"""`agentlog top`: the fleet's snapshot (`observe.fleet`) as a table of 80 columns, one row
per instance, then each role's and the fleet's, the outliers flagged."""

from __future__ import annotations

from rich.table import Table

from agentlog import fmt
from observe.fleet import Rules, Snapshot, Stats, flag, fleet, parse, snapshot

__all__ = ["Rules", "Snapshot", "Stats", "flag", "fleet", "parse", "snapshot", "table"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def _num(value: float | None, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s" if value < 100 else f"{value:.0f}s"


def _instance(row: Stats) -> str:
    """An instance's id without its role (`model-host-42` is `host-42` in the model row)."""
    name = row.instance_id.removeprefix(f"{row.role}-")
    return name + ("" if row.up else " (down)")


def _notes(row: Stats) -> str:
    dead = [f"{row.dead_letters:.0f} dead" if row.dead_letters else ""]
    return "; ".join(n for n in [*dead, *row.flags] if n)


def table(snap: Snapshot) -> Table:
    """The snapshot as a table of 80 columns: one row per instance, then each role's and the
    fleet's (steps per turn and the rest are in `--json`)."""
    out = fmt.table("instance", "role", "work", "err", "mean", "tok in/out", "cost", "lag", "flags")
    out.title = "agentlog top (totals since each instance started)"
    out.columns[0].overflow = "fold"
    out.columns[-1].min_width = 15  # the flags are why one looks: they wrap, never cut
    out.columns[-1].overflow = "fold"
    for column in out.columns[1:8]:
        column.no_wrap = True
        column.justify = "left" if column.header == "role" else "right"

    def add(row: Stats, style: str | None = None) -> None:
        out.add_row(
            _instance(row),
            row.role,
            fmt.count(row.work),
            _pct(row.error_rate),
            _seconds(row.mean_duration_s),
            f"{fmt.count(row.tokens_in)}/{fmt.count(row.tokens_out)}",
            fmt.money(row.cost_usd),
            fmt.count(row.lag),
            _notes(row),
            style=style or ("bold red" if row.flags else None),
        )

    for row in snap.instances:
        add(row)
    out.add_section()
    for role_row in snap.roles.values():
        add(role_row, "dim")
    add(snap.fleet, "bold")
    return out
