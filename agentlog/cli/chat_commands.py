"""What `agentlog chat` does with a line that starts with `/`: a command, never a message
(`//text` sends `/text`). /help, /quit, /fork [SESSION], /cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.markup import escape

from agentlog import fmt

if TYPE_CHECKING:
    from rich.console import Console

    from agentlog.client import Agentlog

HELP = """commands (a line starting with / is never sent; //text sends /text):
  /help            this list
  /cost            the session's cost, tokens and turns so far
  /fork [SESSION]  a new session with this one's history, and go on in it
  /quit            leave (so do /exit, Ctrl-D and Ctrl-C)"""


@dataclass(frozen=True)
class Outcome:
    """After a command: the session to go on in (None: leave), and whether it changed."""

    session_id: str | None
    switched: bool = False


def is_command(line: str) -> bool:
    return line.startswith("/") and not line.startswith("//")


def message(line: str) -> str:
    """The text a line sends: `//text` is `/text`."""
    return line[1:] if line.startswith("//") else line


def run(api: Agentlog, console: Console, session_id: str, line: str) -> Outcome:
    """Do the command of `line` for the session."""
    name, _, rest = line.strip().partition(" ")
    if name in ("/quit", "/exit"):
        return Outcome(None)
    if name == "/help":
        console.print(HELP, markup=False)
    elif name == "/cost":
        console.print(cost(api, session_id), markup=False)
    elif name == "/fork":
        view = api.fork(session_id, **({"session_id": rest.strip()} if rest.strip() else {}))
        console.print(
            f"forked [bold]{escape(session_id)}[/] as [bold]{escape(view.id)}[/]: the chat goes on there"
        )
        return Outcome(view.id, switched=True)
    else:
        console.print(f"[red]unknown command {escape(name)}[/]; /help lists them (//text sends /text)")
    return Outcome(session_id)


def cost(api: Agentlog, session_id: str) -> str:
    """`$0.0012 for 3 turns; tokens 1.2k in, 340 out, 0 cache read, 0 cache write`."""
    meta = api.session(session_id).metadata
    t = meta.total_tokens
    tokens = f"{fmt.count(t.input)} in, {fmt.count(t.output)} out, {fmt.count(t.cache_read)} cache read"
    turns = f"{meta.turn_count} turn" + ("" if meta.turn_count == 1 else "s")
    return (
        f"{fmt.money(meta.session_cost)} for {turns}; tokens {tokens}, {fmt.count(t.cache_write)} cache write"
    )
