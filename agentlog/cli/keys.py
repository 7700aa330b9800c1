"""`agentlog keys rotate`: wrap every session's data key with a new master key. Run it with the
new key in AGENTLOG_MASTER_KEY and the old one in AGENTLOG_PREVIOUS_MASTER_KEYS (as every
process runs during the rotation); afterwards the old key can be dropped everywhere."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agentlog.cli.app import app

keys_app = typer.Typer(help="the master key that wraps every session's data key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def rotate(
    quiet: Annotated[bool, typer.Option("--quiet", help="print nothing")] = False,
) -> None:
    """Wrap every session's data key with AGENTLOG_MASTER_KEY (the old keys given in
    AGENTLOG_PREVIOUS_MASTER_KEYS)."""
    from agentlog.cli.app import settings
    from eventstore import store
    from eventstore.errors import MasterKeyError
    from eventstore.vault import Vault

    config = settings()
    if config.master_key is None:
        typer.echo("agentlog: set AGENTLOG_MASTER_KEY to the new master key", err=True)
        raise typer.Exit(2)

    async def go() -> int:
        await store.migrate(config.database_url)
        vault = Vault(config)
        try:
            return await vault.rotate()
        finally:
            await vault.close()

    try:
        done = asyncio.run(go())
    except MasterKeyError as exc:
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(1) from None
    if not quiet:
        typer.echo(f"{done} data key(s) wrapped with master key {Vault(config).current}")
