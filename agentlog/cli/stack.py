"""The commands that run or inspect the stack itself: up, status, worker, api, migrate, replay,
rebuild."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from agentlog.cli.app import DataDir, app, env_from_stack, settings, setup_logging

# Seconds an idle HTTP connection to the api is kept open (`agentlog api`).
KEEP_ALIVE_S = 75


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="where Postgres data and logs live")] = Path(".agentlog"),
    partitions: Annotated[int, typer.Option(min=1, help="partitions of agentlog.events")] = 8,
    replicas: Annotated[
        str, typer.Option(help="replicas of every worker role (3), or per role (reactor=2,model=3)")
    ] = "1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="the api's port on 127.0.0.1 (0: a free one)")
    ] = 0,
) -> None:
    """Start Postgres, a broker, the api and every worker role; Ctrl-C stops them all."""
    from agentlog import devstack

    with config_errors():
        _check_tools_and_agents()  # before anything starts: the children would die of it in turn
    try:
        counts = devstack.parse_replicas(replicas)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--replicas") from None
    raise typer.Exit(devstack.up(data_dir, dict(os.environ), partitions, counts, port))


def _check_tools_and_agents() -> None:
    """Load the users' tools and the agents file as the workers and the api will."""
    from api.agents import load
    from processors.tools.discovery import load_registry

    current = settings()
    load_registry(current.tool_modules)
    load(current.agents)


@contextmanager
def config_errors() -> Iterator[None]:
    """A tool that cannot load or a wrong agents file ends the command with its message."""
    from api.agents import AgentsFileError
    from processors.tools.errors import ToolConfigError

    try:
        yield
    except (ToolConfigError, AgentsFileError) as exc:
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def status(
    data_dir: DataDir = Path(".agentlog"),
    as_json: Annotated[bool, typer.Option("--json", help="print stack.json")] = False,
) -> None:
    """Where the running stack is: api URL, Postgres URI, bootstrap, processes."""
    path = data_dir / "stack.json"
    if not path.exists():
        typer.echo(f"agentlog is not running here (no {path})", err=True)
        raise typer.Exit(1)
    stack = json.loads(path.read_text())
    if as_json:
        typer.echo(json.dumps(stack, indent=2))
        return
    for key in ("api_url", "database_url", "kafka_bootstrap", "default_model"):
        typer.echo(f"{key:16} {stack.get(key, '')}")
    for proc in stack["processes"]:
        alive = _alive(proc["pid"])
        typer.echo(f"{proc['name']:16} pid {proc['pid']:<8} {'running' if alive else 'gone'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@app.command()
def worker(
    role: Annotated[str, typer.Argument(help="reactor | model | tools | subagents | projector")],
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Run one worker role in the foreground (beside a running stack, or as AGENTLOG_* say)."""
    from processors.run import ROLES, run_role

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="ROLE")
    env_from_stack(data_dir)
    setup_logging()
    with config_errors():
        asyncio.run(run_role(role, settings()))


@app.command()
def api(
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port to listen on")] = 8000,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Serve the HTTP api (beside a running stack, or as AGENTLOG_* say)."""
    import uvicorn

    from api.app import create_app

    env_from_stack(data_dir)
    setup_logging()
    with config_errors():
        app = create_app(settings())
    # uvloop and httptools: the same api in C where the time went (bench.parts: ingest). Idle
    # connections are kept past what clients and load balancers keep theirs (httpx 5 s, an
    # AWS load balancer 60 s): closing at uvicorn's 5 s races a client's next request on the
    # same connection, which then reads a reset (seen under bench.compare's 100 sessions).
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=KEEP_ALIVE_S,
    )


@app.command()
def migrate(data_dir: DataDir = Path(".agentlog")) -> None:
    """Apply pending database migrations (to the running stack's database, or AGENTLOG_DATABASE_URL)."""
    from eventstore import store

    env_from_stack(data_dir)
    applied = asyncio.run(store.migrate(settings().database_url))
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or '-'}")


@app.command()
def replay(
    session_id: str,
    source: Annotated[str, typer.Option(help="kafka | postgres")] = "postgres",
    tenant: Annotated[str | None, typer.Option(help="SESSION is this tenant's id")] = None,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Print a session's state folded from the log or from Postgres, as JSON. Without
    --tenant, SESSION is the stored id (`tenant~id`, or the default tenant's id as given)."""
    from agentlog.replay import replay as do_replay
    from eventstore import ids

    if source not in ("kafka", "postgres"):
        raise typer.BadParameter("kafka or postgres", param_hint="--source")
    if tenant is not None:
        session_id = ids.scoped_session_id(tenant, session_id)
    env_from_stack(data_dir)
    state = asyncio.run(do_replay(settings(), session_id, source))  # type: ignore[arg-type]
    if state.event_count == 0:
        typer.echo(f"no events for session {session_id} in {source}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(state.public(), indent=2, sort_keys=True))


@app.command()
def rebuild(data_dir: DataDir = Path(".agentlog")) -> None:
    """Drop the derived tables and rebuild them from the log (older epochs from Postgres)."""
    from rich.progress import Progress

    from agentlog.replay import rebuild as do_rebuild

    env_from_stack(data_dir)
    with Progress() as bar:
        task = bar.add_task("rebuilding", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = asyncio.run(do_rebuild(settings(), progress))
    typer.echo(json.dumps(result))
