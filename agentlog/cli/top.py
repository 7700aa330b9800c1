"""`agentlog top`: the fleet's instances side by side with the aggregate, outliers flagged."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from agentlog.cli.app import DataDir, app, database_url


@app.command("top")
def top_command(
    once: Annotated[bool, typer.Option("--once", help="print one snapshot and exit")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the snapshot as JSON (with --once)")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    mad_k: Annotated[
        float, typer.Option(help="flag values above median + k × MAD of the role's peers")
    ] = 3.0,
    min_work: Annotated[float, typer.Option(help="least work an instance must have done to be compared")] = 5,
    within: Annotated[float, typer.Option(help="instances whose heartbeat is at most this old (s)")] = 20.0,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Every running instance (registered in Postgres) and the fleet, refreshing; outliers in red."""
    from rich.console import Console
    from rich.live import Live

    from agentlog import top

    url = database_url(data_dir)
    rules = top.Rules(k=mad_k, min_work=min_work)

    def snap() -> top.Snapshot:
        return asyncio.run(top.snapshot(url, rules, within))

    if once:
        snapshot = snap()
        if as_json:
            typer.echo(json.dumps(snapshot.as_json(), indent=2, default=str))
        else:
            Console().print(top.table(snapshot))
        return
    with Live(top.table(snap()), refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(top.table(snap()))
        except KeyboardInterrupt:
            pass
