"""The `agentlog` command: up, status, worker, api, replay, rebuild, migrate; and, through the api
client, chat, send, sessions; sql over the projection; token create."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from eventstore.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from agentlog.client import Agentlog
    from api.models import EventView

app = typer.Typer(help="agentlog: an event-sourced runtime for LLM agents.", no_args_is_help=True)
token_app = typer.Typer(help="api tokens: a bearer token maps to a tenant.", no_args_is_help=True)
app.add_typer(token_app, name="token")
DataDir = Annotated[Path, typer.Option(help="where `agentlog up` keeps stack.json")]


def _settings() -> Settings:
    return Settings()


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="where Postgres data and logs live")] = Path(".agentlog"),
    partitions: Annotated[int, typer.Option(min=1, help="partitions of agentlog.events")] = 8,
) -> None:
    """Start Postgres, a broker, the api and every worker role; Ctrl-C stops them all."""
    from agentlog import devstack

    raise typer.Exit(devstack.up(data_dir, dict(os.environ), partitions))


@app.command()
def status(
    data_dir: Annotated[Path, typer.Option()] = Path(".agentlog"),
    as_json: Annotated[bool, typer.Option("--json", help="print stack.json")] = False,
) -> None:
    """Where the running stack is: api URL, Postgres URI, bootstrap, processes."""
    path = data_dir / "stack.json"
    if not path.exists():
        typer.echo("agentlog is not running here (no .agentlog/stack.json)", err=True)
        raise typer.Exit(1)
    stack = json.loads(path.read_text())
    if as_json:
        typer.echo(json.dumps(stack, indent=2))
        return
    for key in ("api_url", "database_url", "kafka_bootstrap"):
        typer.echo(f"{key:16} {stack[key]}")
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
) -> None:
    """Run one worker role in the foreground."""
    from processors.run import ROLES, run_role

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="ROLE")
    _logging()
    asyncio.run(run_role(role, _settings()))


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the HTTP api."""
    import uvicorn

    from api.app import create_app

    _logging()
    uvicorn.run(create_app(_settings()), host=host, port=port, log_level="info")


@app.command()
def migrate() -> None:
    """Apply pending database migrations."""
    from eventstore import store

    applied = asyncio.run(store.migrate(_settings().database_url))
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or '-'}")


def _env_from_stack(data_dir: Path) -> None:
    # Let replay/rebuild find a running `agentlog up` without exporting variables.
    path = data_dir / "stack.json"
    if path.exists():
        stack = json.loads(path.read_text())
        os.environ.setdefault("AGENTLOG_DATABASE_URL", stack["database_url"])
        os.environ.setdefault("AGENTLOG_KAFKA_BOOTSTRAP", stack["kafka_bootstrap"])


@app.command()
def replay(
    session_id: str,
    source: Annotated[str, typer.Option(help="kafka | postgres")] = "postgres",
    data_dir: Annotated[Path, typer.Option()] = Path(".agentlog"),
) -> None:
    """Print a session's state folded from the log or from Postgres, as JSON."""
    from agentlog.replay import replay as do_replay

    if source not in ("kafka", "postgres"):
        raise typer.BadParameter("kafka or postgres", param_hint="--source")
    _env_from_stack(data_dir)
    state = asyncio.run(do_replay(_settings(), session_id, source))  # type: ignore[arg-type]
    if state.event_count == 0:
        typer.echo(f"no events for session {session_id} in {source}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(state.public(), indent=2, sort_keys=True))


@app.command()
def rebuild(data_dir: Annotated[Path, typer.Option()] = Path(".agentlog")) -> None:
    """Drop the derived tables and rebuild them from the log (older epochs from Postgres)."""
    from rich.progress import Progress

    from agentlog.replay import rebuild as do_rebuild

    _env_from_stack(data_dir)
    with Progress() as bar:
        task = bar.add_task("rebuilding", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = asyncio.run(do_rebuild(_settings(), progress))
    typer.echo(json.dumps(result))


# --- through the api --------------------------------------------------------------------------


@contextmanager
def _api_errors() -> Iterator[None]:
    """Errors of the api (or of reaching it) end the command with their message, not a traceback."""
    from agentlog.client import AgentlogError, NotConfigured

    try:
        yield
    except (AgentlogError, NotConfigured, TimeoutError) as exc:
        typer.echo(f"agentlog: {exc}", err=True)
        raise typer.Exit(1) from None


def _client(data_dir: Path) -> Agentlog:
    from agentlog.client import from_stack

    return from_stack(data_dir / "stack.json")


@app.command()
def send(
    session_id: Annotated[str, typer.Argument(metavar="SESSION")],
    text: str,
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for the answer (0: don't)")] = 60,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency-Key")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the turn as JSON")] = False,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Post a user turn and print the answer (or the accepted turn when it is not done in time)."""
    from api.models import TurnView

    with _api_errors(), _client(data_dir) as client:
        turn = client.send(session_id, text, idempotency_key=key, wait=wait or None)
    if as_json:
        typer.echo(turn.model_dump_json(indent=2))
    elif not isinstance(turn, TurnView):
        typer.echo(f"accepted: turn {turn.turn_id} of session {turn.session_id} (key {turn.idempotency_key})")
    elif turn.status == "failed":
        typer.echo(f"turn {turn.turn_id} failed: {turn.error}", err=True)
    else:
        typer.echo(turn.output_text)
    if isinstance(turn, TurnView) and turn.status == "failed":
        raise typer.Exit(1)


@app.command()
def sessions(
    status: Annotated[str | None, typer.Option(help="idle | running | expired")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """List sessions in id order: status, model, turns, cost, times."""
    from itertools import islice

    from rich.console import Console
    from rich.table import Column, Table

    with _api_errors(), _client(data_dir) as client:
        found = list(islice(client.sessions(status, min(limit, 500)), limit))
    if as_json:
        typer.echo(json.dumps([s.model_dump() for s in found], indent=2))
        return
    session_column = Column("session", overflow="fold")  # ids are for copying: never cut short
    table = Table(session_column, "status", "model", "turns", "cost (USD)", "started", "last activity")
    for s in found:
        table.add_row(
            s.id,
            s.status,
            s.model or "",
            str(s.turn_count),
            s.cost_usd,
            s.started_at or "",
            s.last_activity_at or "",
        )
    Console().print(table)


@app.command()
def chat(
    session_id: Annotated[str | None, typer.Argument(metavar="[SESSION]", help="default: a new one")] = None,
    model: Annotated[str | None, typer.Option(help="the model of a new session")] = None,
    system: Annotated[str | None, typer.Option(help="the system prompt of a new session")] = None,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Talk to a session: each line a turn, its text, tool calls and results as they happen; /quit leaves."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    session_id = session_id or f"chat-{uuid.uuid4().hex[:12]}"
    console.print(f"session [bold]{session_id}[/]  (/quit to leave)", markup=True)
    with _api_errors(), _client(data_dir) as client:
        last = _last_seq(client, session_id)
        if last == 0:  # made now, so that its stream is open before the first message is posted
            client.create_session(session_id=session_id, model=model, system=system)
            _until_projected(client, session_id)
            last = _last_seq(client, session_id)
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                break
            if line.strip() in ("/quit", "/exit"):
                break
            if line.strip():
                last = _turn(client, console, session_id, line, last)


def _last_seq(client: Agentlog, session_id: str) -> int:
    """The session's last event (0 for a new session), to follow only what comes next."""
    from agentlog.client import AgentlogError

    last = 0
    try:
        for event in client.events(session_id, limit=1000):
            last = event.seq
    except AgentlogError as exc:
        if exc.status != 404:
            raise
    return last


def _until_projected(client: Agentlog, session_id: str, within: float = 30) -> None:
    """A session made by its first message answers 404 until the projection has it."""
    import time

    from agentlog.client import AgentlogError

    deadline = time.monotonic() + within
    while True:
        try:
            client.session(session_id)
            return
        except AgentlogError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _turn(client: Agentlog, console: Console, session_id: str, text: str, last: int) -> int:
    """Post `text` once the session's stream is live, then print the turn as its events arrive,
    until it ends; returns the last sequence seen."""
    from agentlog.client import AgentlogError
    from api.models import TextDelta

    turn_id: str | None = None
    # Deltas may overtake the stored events before them (they come another way): a step's text
    # shows once its model_requested has, so it never lands before the previous step's tool calls.
    live: set[int | None] = set()  # steps whose model call is under way
    held: dict[int | None, str] = {}  # text of steps not live yet
    streamed: dict[int | None, str] = {}  # text of each step shown as it came
    done: set[int | None] = set()  # steps whose message is out: a delta still to come is a late copy
    with closing(client.stream(session_id, after=last - 1)) as items:
        for item in items:
            if turn_id is None:
                # The stream shows the last event, so it listens for deltas: none of this turn's is missed.
                try:
                    turn_id = client.send(session_id, text).turn_id
                except AgentlogError as exc:  # e.g. 409 under policy reject: say so, go on
                    console.print(f"[red]{escape(str(exc))}[/]")
                    return last
            if isinstance(item, TextDelta):
                if item.turn_id in (None, turn_id) and item.step not in done:
                    if item.step in live:
                        streamed[item.step] = streamed.get(item.step, "") + item.text
                        console.print(item.text, end="", markup=False)
                    else:
                        held[item.step] = held.get(item.step, "") + item.text
                continue
            last = max(last, item.seq)
            if item.turn_id != turn_id:
                continue
            if item.type == "model_requested" and item.step not in live:
                live.add(item.step)
                if item.step in held:
                    streamed[item.step] = held.pop(item.step)
                    console.print(streamed[item.step], end="", markup=False)
            elif item.type == "assistant_message":
                _finish_text(console, item, streamed.get(item.step, ""))
                done.add(item.step)
            else:
                _show(console, item)
            if item.type in ("turn_completed", "turn_failed"):
                break
    return last


def _finish_text(console: Console, event: EventView, streamed: str) -> None:
    """The rest of an assistant message the deltas did not bring (all of it when none came)."""
    text = "\n".join(b.get("text", "") for b in event.payload.get("content", []) if b.get("type") == "text")
    if not streamed:
        if text:
            console.print(text, markup=False)
    elif text.startswith(streamed):
        console.print(text[len(streamed) :], markup=False)
    else:
        console.print()


def _show(console: Console, event: EventView) -> None:
    """Print what a user wants to see of a tool call, its result, an approval or a failure."""
    p = event.payload
    if event.type == "tool_requested":
        console.print(f"[yellow]→ {escape(str(p.get('name')))}[/] {escape(json.dumps(p.get('input', {})))}")
    elif event.type == "approval_requested":
        console.print(f"[yellow]… {escape(str(p.get('name')))} waits for approval {p.get('approval_id')}[/]")
    elif event.type == "tool_result":
        mark = "[red]✗[/]" if p.get("is_error") else "[green]←[/]"
        console.print(f"{mark} {escape(_first_line(p.get('content')))}")
    elif event.type == "turn_failed":
        console.print(f"[red]turn failed: {escape(str(p.get('reason')))}[/]")


def _first_line(content: Any) -> str:
    if isinstance(content, list):
        content = next((b.get("text", "") for b in content if isinstance(b, dict) and "text" in b), "")
    lines = str(content or "").strip().splitlines()
    return lines[0] if lines else ""


# --- straight to the database ---------------------------------------------------------------


def _database_url(data_dir: Path) -> str:
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

    url = _database_url(data_dir)
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

    url = _database_url(data_dir)

    async def create() -> str:
        await store.migrate(url)
        async with await store.connect(url) as conn:
            return await tenants.create_token(conn, tenant, name)

    token = asyncio.run(create())
    typer.echo(f"token for tenant {tenant} (shown once):", err=True)
    typer.echo(token)


def main() -> None:
    """Console script entry point."""
    app()
