"""The `agentlog` Typer app every command module registers on, and what commands share: settings,
logging, the api client, the database URL. A new command module defines its commands on `app`
(or its own `add_typer` group) and is listed in `agentlog/cli/__init__.py`."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from eventstore.settings import Settings

if TYPE_CHECKING:
    from agentlog.client import Agentlog

__all__ = [
    "DataDir",
    "api_errors",
    "app",
    "client",
    "database_url",
    "env_from_stack",
    "settings",
    "setup_logging",
    "token_app",
]

app = typer.Typer(help="agentlog: an event-sourced runtime for LLM agents.", no_args_is_help=True)
token_app = typer.Typer(help="api tokens: a bearer token maps to a tenant.", no_args_is_help=True)
app.add_typer(token_app, name="token")
DataDir = Annotated[Path, typer.Option(help="where `agentlog up` keeps stack.json")]


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import version

        typer.echo(f"agentlog {version('agentlog')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """agentlog: an event-sourced runtime for LLM agents."""


def settings() -> Settings:
    """The settings, read once from the environment by the command that needs them."""
    return Settings()


def setup_logging() -> None:
    """Log to stderr, for the long-running commands (a worker, the api)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def env_from_stack(data_dir: Path) -> None:
    """Let a command that reads `Settings` find a running `agentlog up` without exporting variables."""
    path = data_dir / "stack.json"
    if path.exists():
        stack = json.loads(path.read_text())
        os.environ.setdefault("AGENTLOG_DATABASE_URL", stack["database_url"])
        os.environ.setdefault("AGENTLOG_KAFKA_BOOTSTRAP", stack["kafka_bootstrap"])
    key = data_dir / "master-key"  # the stack's records are sealed with it (agentlog up)
    if key.exists() and path.exists():
        os.environ.setdefault("AGENTLOG_MASTER_KEY", key.read_text().strip())


@contextmanager
def api_errors() -> Iterator[None]:
    """Errors of the api (or of reaching it) end the command with their message, not a traceback."""
    from agentlog.client import AgentlogError, ApiUnreachable, NotConfigured

    try:
        yield
    except ApiUnreachable as exc:
        typer.echo(f"agentlog: the api does not answer at {exc.detail}", err=True)
        raise typer.Exit(1) from None
    except (AgentlogError, NotConfigured, TimeoutError) as exc:
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(1) from None


def client(data_dir: Path) -> Agentlog:
    """A client of the api the environment or `data_dir/stack.json` names."""
    from agentlog.client import from_stack

    return from_stack(data_dir / "stack.json")


def database_url(data_dir: Path) -> str:
    """The database the environment or `data_dir/stack.json` names; exits saying how to set one."""
    from agentlog.client import locate

    url = locate(data_dir / "stack.json").database_url
    if url is None:
        typer.echo(
            f"agentlog: no database: set AGENTLOG_DATABASE_URL, or run `agentlog up` here so that"
            f" {data_dir / 'stack.json'} exists",
            err=True,
        )
        raise typer.Exit(1)
    return url
