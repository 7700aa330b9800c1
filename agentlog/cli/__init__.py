"""The `agentlog` command. Each module of this package defines its commands on the shared `app`
(`agentlog.cli.app`); importing it here registers them."""

import sys
from typing import Any

import typer

from agentlog.cli.app import app

# The order of these imports is the order of `agentlog --help`; a new command module is one more line.
# isort: off
from agentlog.cli import stack  # noqa: F401 - up, status, worker, api, migrate, replay, rebuild
from agentlog.cli import chat  # noqa: F401 - send, sessions, chat
from agentlog.cli import sql  # noqa: F401 - sql
from agentlog.cli import tokens  # noqa: F401 - token create, list, revoke
from agentlog.cli import keys  # noqa: F401 - keys rotate
from agentlog.cli import top  # noqa: F401 - top
from agentlog.cli import logs  # noqa: F401 - logs
from agentlog.load import bench_app
# isort: on

app.add_typer(bench_app, name="bench")  # bench load

__all__ = ["app", "command", "main"]


def command() -> Any:
    """The app as a click command, in one help style: an option shows the name of its value
    (`--interval INTERVAL`), a flag nothing (never `<bool>`), an argument its name alone."""
    root = typer.main.get_command(app)
    _one_style(root)
    return root


def _one_style(cmd: Any) -> None:
    """Typer's help shows a type beside every parameter (`<bool>`, `<str>`); set it right here,
    once, for every command (typer builds its own click objects, so this is duck-typed)."""
    for param in cmd.params:
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
            param.metavar = param.metavar or (param.name or "").upper()
        elif param.is_flag or param.count:
            param.metavar = ""
        elif param.metavar is None and param.name:
            param.metavar = param.name.upper()
    help_option = cmd.get_help_option

    def quiet_help(ctx: Any) -> Any:
        option = help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    cmd.get_help_option = quiet_help
    for sub in getattr(cmd, "commands", {}).values():
        _one_style(sub)


def main() -> None:
    """Console script entry point. A database that does not answer (none running, a wrong URL,
    no such database) ends any command with one line, not a traceback."""
    import psycopg

    try:
        command()(prog_name="agentlog")
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())  # psycopg's message spans lines
        typer.echo(f"agentlog: the database does not answer: {reason}", err=True)
        sys.exit(1)
