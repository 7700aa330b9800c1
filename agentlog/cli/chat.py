"""The commands that talk to the api through the client: chat (a turn's text, tool calls and
results streamed as they happen), send, sessions."""

from __future__ import annotations

import json
import uuid
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agentlog import fmt
from agentlog.cli import chat_commands
from agentlog.cli.app import DataDir, api_errors, app, client

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from agentlog.client import Agentlog
    from api.models import EventView, SessionSummary


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

    with api_errors(), client(data_dir) as api:
        turn = api.send(session_id, text, idempotency_key=key, wait=wait or None)
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

    with api_errors(), client(data_dir) as api:
        found = list(islice(api.sessions(status, min(limit, 500)), limit))
    if as_json:
        typer.echo(json.dumps([s.model_dump() for s in found], indent=2))
        return
    Console().print(sessions_table(found))


def sessions_table(found: list[SessionSummary]) -> Table:
    """Sessions in 80 columns: the id whole (it is for copying), the rest short."""
    out = fmt.table("session", "status", "model", "turns", "cost", "last active")
    out.columns[0].overflow = "fold"
    for column in out.columns[3:5]:
        column.justify = "right"
    for s in found:
        out.add_row(
            s.id,
            s.status,
            _short_model(s.model),
            str(s.turn_count),
            fmt.money(s.cost_usd),
            fmt.when(s.last_activity_at),
        )
    return out


def _short_model(model: str | None) -> str:
    """`claude-sonnet-5-5` as `sonnet-5-5`, `agentlog-offline-1` as `offline-1`: the family is known."""
    name = model or ""
    for prefix in ("claude-", "agentlog-"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@app.command()
def chat(
    session_id: Annotated[str | None, typer.Argument(metavar="SESSION", help="default: a new one")] = None,
    model: Annotated[str | None, typer.Option(help="the model of a new session")] = None,
    system: Annotated[str | None, typer.Option(help="the system prompt of a new session")] = None,
    agent: Annotated[
        str | None, typer.Option(help="a new session starts from this agent (AGENTLOG_AGENTS)")
    ] = None,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Talk to a session: each line a turn, its text, tool calls and results as they happen;
    /help, /cost, /fork, /quit are commands."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    session_id = session_id or f"chat-{uuid.uuid4().hex[:12]}"
    console.print(f"session [bold]{session_id}[/]  (/help for commands, /quit to leave)", markup=True)
    with api_errors(), client(data_dir) as api:
        last = _last_seq(api, session_id)
        if last == 0:  # made now, so that its stream is open before the first message is posted
            api.create_session(session_id=session_id, model=model, system=system, agent=agent)
            _until_projected(api, session_id)
            last = _last_seq(api, session_id)
        while True:
            try:
                line = console.input("[bold cyan]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                break
            if chat_commands.is_command(line.strip()):
                outcome = chat_commands.run(api, console, session_id, line)
                if outcome.session_id is None:
                    break
                if outcome.switched:
                    session_id = outcome.session_id
                    _until_projected(api, session_id)
                    last = _last_seq(api, session_id)
            elif line.strip():
                last = _turn(api, console, session_id, chat_commands.message(line.strip()), last)


def _last_seq(api: Agentlog, session_id: str) -> int:
    """The session's last event (0 for a new session), to follow only what comes next."""
    from agentlog.client import AgentlogError

    last = 0
    try:
        for event in api.events(session_id, limit=1000):
            last = event.seq
    except AgentlogError as exc:
        if exc.status != 404:
            raise
    return last


def _until_projected(api: Agentlog, session_id: str, within: float = 30) -> None:
    """A session made by its first message answers 404 until the projection has it."""
    import time

    from agentlog.client import AgentlogError

    deadline = time.monotonic() + within
    while True:
        try:
            api.session(session_id)
            return
        except AgentlogError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _turn(api: Agentlog, console: Console, session_id: str, text: str, last: int) -> int:
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
    with closing(api.stream(session_id, after=last - 1)) as items:
        for item in items:
            if turn_id is None:
                # The stream shows the last event, so it listens for deltas: none of this turn's is missed.
                try:
                    turn_id = api.send(session_id, text).turn_id
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
    """Print what a user wants to see of a tool call, its result, an approval, a failure or a
    compaction."""
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
    elif event.type == "context_compacted":
        summarised = "summarised" if p.get("model") else "kept"
        console.print(
            f"[dim]context compacted: earlier messages {summarised}, old tool results cleared"
            f" (about {p.get('tokens_before')} → {p.get('tokens_after')} tokens)[/]"
        )


def _first_line(content: Any) -> str:
    if isinstance(content, list):
        content = next((b.get("text", "") for b in content if isinstance(b, dict) and "text" in b), "")
    lines = str(content or "").strip().splitlines()
    return lines[0] if lines else ""
