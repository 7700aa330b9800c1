"""`agentlog token create | list | revoke`: the api's bearer tokens, straight in the database
(only a token's sha256 is stored; a token is shown once, when it is made). A revoked or
expired token answers 401 at once: the api looks every token up on every request."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from agentlog import fmt
from agentlog.cli.app import DataDir, database_url, token_app

if TYPE_CHECKING:
    from eventstore.store import AsyncConn

T = TypeVar("T")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LIFETIME = re.compile(r"(\d{1,9})([smhd]?)")


def lifetime(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `3600s` or `3600` (seconds) as a positive duration."""
    matched = _LIFETIME.fullmatch(text.strip())
    if matched is None or int(matched[1]) == 0:
        raise typer.BadParameter("a positive number with s, m, h or d, e.g. 90d", param_hint="--expires-in")
    return timedelta(seconds=int(matched[1]) * _UNITS[matched[2] or "s"])


def _run(data_dir: Path, work: Callable[[AsyncConn], Awaitable[T]]) -> T:
    """Run `work` on a connection to the migrated database."""
    from eventstore import store

    url = database_url(data_dir)

    async def go() -> T:
        await store.migrate(url)
        async with await store.connect(url) as conn:
            return await work(conn)

    return asyncio.run(go())


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Argument(metavar="TENANT")],
    name: Annotated[str, typer.Option(help="what the token is for")] = "",
    expires_in: Annotated[
        str | None, typer.Option(help="lifetime, e.g. 90d, 12h, 30m (default: until revoked)")
    ] = None,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Issue a bearer token for TENANT and print it (it is shown once; only its hash is kept)."""
    from eventstore import tenants

    if not tenants.is_tenant_id(tenant):
        typer.echo(f"agentlog: invalid tenant id {tenant[:80]!r}: {tenants.TENANT_ID_RULE}", err=True)
        raise typer.Exit(2)
    lasts = lifetime(expires_in) if expires_in is not None else None
    token = _run(data_dir, lambda conn: tenants.create_token(conn, tenant, name, lasts))
    until = f", expires in {lasts}" if lasts is not None else ""
    typer.echo(f"token for tenant {tenant}{until} (shown once):", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(
    tenant: Annotated[str | None, typer.Option(help="only this tenant's tokens")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="tokens as JSON objects")] = False,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """List the stored tokens: id, tenant, name, times and status (never the token itself)."""
    from rich.console import Console

    from eventstore import tenants

    found = _run(data_dir, lambda conn: tenants.list_tokens(conn, tenant))
    if as_json:
        typer.echo(json.dumps([asdict(t) for t in found], indent=2, default=str))
        return
    table = fmt.table("id", "tenant", "name", "created", "expires", "status")
    table.columns[0].overflow = "fold"
    for t in found:
        status = f"revoked {fmt.when(t.revoked_at)}" if t.revoked_at else t.status
        table.add_row(t.token_id, t.tenant_id, t.name, fmt.when(t.created_at), fmt.when(t.expires_at), status)
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token: Annotated[
        str, typer.Argument(metavar="ID_OR_TOKEN", help="an id from `token list`, or the token")
    ],
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Revoke a token: from now on it answers 401."""
    from eventstore import tenants

    try:
        info = _run(data_dir, lambda conn: tenants.revoke_token(conn, token))
    except tenants.UnknownToken as exc:
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked token {info.token_id} of tenant {info.tenant_id} ({info.name or 'no name'})")
