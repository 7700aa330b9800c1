"""`agentlog sql`: a query straight to the database, over the projection (as the analyst role
when a tenant is given)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from agentlog import fmt
from agentlog.cli.app import DataDir, app, database_url


@app.command()
def sql(
    query: str,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON objects")] = False,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Run a read-only SQL query over the projection (see docs/sql.md) and print the rows."""
    from rich.console import Console

    from agentlog.analyst import AnalystError, run_sql

    url = database_url(data_dir)
    try:
        columns, rows = asyncio.run(run_sql(url, query, tenant))
    except AnalystError as exc:  # refused or failed: the database's own message says why
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2, default=str))
        return
    table = fmt.table(*columns)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    Console().print(table)


def _cell(value: object) -> str:
    """A value as text; a decimal in positional notation (`0`, `0.0012`, never `0E-10`)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return "0" if value == 0 else format(value.normalize(), "f")
    return str(value)
