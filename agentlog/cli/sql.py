"""The commands that go straight to the database: `sql` over the projection (as the analyst role
when a tenant is given) and `token create`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from agentlog.cli.app import DataDir, app, database_url, token_app


@app.command()
def sql(
    query: str,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's rows")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="rows as JSON objects")] = False,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Run a read-only SQL query over the projection (see docs/sql.md) and print the rows."""
    from rich.console import Console
    from rich.table import Table

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
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Argument(metavar="TENANT")],
    name: Annotated[str, typer.Option(help="what the token is for")] = "",
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Issue a bearer token for TENANT and print it (it is shown once; only its hash is kept)."""
    from eventstore import store, tenants

    if not tenants.is_tenant_id(tenant):
        typer.echo(f"agentlog: invalid tenant id {tenant[:80]!r}: {tenants.TENANT_ID_RULE}", err=True)
        raise typer.Exit(2)
    url = database_url(data_dir)

    async def create() -> str:
        await store.migrate(url)
        async with await store.connect(url) as conn:
            return await tenants.create_token(conn, tenant, name)

    token = asyncio.run(create())
    typer.echo(f"token for tenant {tenant} (shown once):", err=True)
    typer.echo(token)
