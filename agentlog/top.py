"""`agentlog top`: the fleet's snapshot (`observe.fleet`) as a table, one row per instance,
then each role's and the fleet's, the outliers flagged."""

from __future__ import annotations

from rich.table import Table

from observe.fleet import Rules, Snapshot, Stats, flag, fleet, parse, snapshot

__all__ = ["Rules", "Snapshot", "Stats", "flag", "fleet", "parse", "snapshot", "table"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def table(snap: Snapshot) -> Table:
    """The snapshot as a rich table: one row per instance, then each role's and the fleet's."""
    out = Table(title="agentlog top (totals since each instance started)")
    for column in (
        "instance",
        "role",
        "work",
        "errors",
        "mean s",
        "steps/turn",
        "tokens in/out",
        "cost $",
        "lag",
        "dead",
        "flags",
    ):
        out.add_column(column, justify="left" if column in ("instance", "role", "flags") else "right")

    def add(row: Stats, style: str | None = None) -> None:
        out.add_row(
            row.instance_id + ("" if row.up else " (down)"),
            row.role,
            _num(row.work, "{:.0f}"),
            _pct(row.error_rate),
            _num(row.mean_duration_s),
            _num(row.steps_per_turn),
            f"{row.tokens_in:.0f}/{row.tokens_out:.0f}",
            f"{row.cost_usd:.4f}",
            f"{row.lag:.0f}",
            f"{row.dead_letters:.0f}",
            "; ".join(row.flags),
            style=style or ("bold red" if row.flags else None),
        )

    for row in snap.instances:
        add(row)
    out.add_section()
    for role_row in snap.roles.values():
        add(role_row, "dim")
    add(snap.fleet, "bold")
    return out
