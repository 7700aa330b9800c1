"""How the CLI writes numbers, money and times in tables that fit an 80-column terminal:
`$0.0012` (never `0E-10`), `12.3k`, `10:13:44` for today and `12-03 10:13` before."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from rich import box
from rich.table import Table


def money(value: Decimal | float | str | None) -> str:
    """USD as people read it: `$0`, `$0.0012`, `$12.34`; `<$0.0001` for dust; `unknown` for None."""
    if value is None:
        return "unknown"
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    if abs(amount) < Decimal("0.0001"):
        return "<$0.0001" if amount > 0 else "-<$0.0001"
    return f"${amount:.4f}"


def count(value: float) -> str:
    """A count in at most five characters: `950`, `12.3k`, `4.5M`."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"


def when(value: str | datetime | None, now: datetime | None = None) -> str:
    """A timestamp in local terms of the day: `10:13:44` today, `12-03 10:13` before, UTC."""
    if value is None or value == "":
        return ""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    today = (now or datetime.now(UTC)).date()
    return at.strftime("%H:%M:%S") if at.date() == today else at.strftime("%m-%d %H:%M")


def table(*columns: str, title: str | None = None) -> Table:
    """A table without a frame: a rule under the header, one space between columns."""
    out = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=0, show_edge=False)
    for column in columns:
        out.add_column(column)
    return out
