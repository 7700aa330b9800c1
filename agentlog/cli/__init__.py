"""The `agentlog` command. Each module of this package defines its commands on the shared `app`
(`agentlog.cli.app`); importing it here registers them."""

from agentlog.cli.app import app

# The order of these imports is the order of `agentlog --help`; a new command module is one more line.
# isort: off
from agentlog.cli import stack  # noqa: F401 - up, status, worker, api, migrate, replay, rebuild
from agentlog.cli import chat  # noqa: F401 - send, sessions, chat
from agentlog.cli import sql  # noqa: F401 - sql
from agentlog.cli import tokens  # noqa: F401 - token create, list, revoke
from agentlog.cli import top  # noqa: F401 - top
from agentlog.load import bench_app
# isort: on

app.add_typer(bench_app, name="bench")  # bench load

__all__ = ["app", "main"]


def main() -> None:
    """Console script entry point."""
    app()
