"""`agentlog logs [ROLE] [-f]`: the logs `agentlog up` writes to `.agentlog/logs/`, one role's
or all of them (each line prefixed by its role), the last lines then, with -f, what follows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from agentlog.cli.app import DataDir, app

# The worker roles as `agentlog worker` names them, and their log files' names.
ALIASES = {"model": "model-worker", "tools": "tool-worker", "subagents": "subagent-worker"}


@app.command()
def logs(
    role: Annotated[
        str | None,
        typer.Argument(metavar="ROLE", help="api, reactor, model, tools, subagents, projector, broker…"),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing what is written")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="lines of each log to start with")] = 20,
    data_dir: DataDir = Path(".agentlog"),
) -> None:
    """Print the stack's logs (all roles, or one), then follow them with -f."""
    directory = data_dir / "logs"
    found = sorted(directory.glob("*.log")) if directory.is_dir() else []
    if not found:
        typer.echo(f"agentlog: no logs in {directory}: `agentlog up` writes them there", err=True)
        raise typer.Exit(1)
    chosen = found if role is None else [p for p in found if p.stem == ALIASES.get(role, role)]
    if not chosen:
        names = ", ".join(p.stem for p in found)
        typer.echo(f"agentlog: no log for {role!r}; there are: {names}", err=True)
        raise typer.Exit(1)
    width = max(len(p.stem) for p in chosen) if len(chosen) > 1 else 0
    positions: dict[Path, int] = {}
    for path in chosen:
        text, positions[path] = tail(path, lines)
        _print(path, text, width)
    try:
        while follow:
            time.sleep(0.25)
            for path in chosen:
                text, positions[path] = grown(path, positions[path])
                _print(path, text, width)
    except KeyboardInterrupt:
        pass


def tail(path: Path, count: int) -> tuple[str, int]:
    """The last `count` whole lines of a file, and where its end is."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        start, chunk = end, b""
        while start > 0 and chunk.count(b"\n") <= count:
            start = max(0, start - 65536)
            f.seek(start)
            chunk = f.read(end - start)
    kept = chunk.splitlines(keepends=True)[-count:] if count else []
    return b"".join(kept).decode("utf-8", "replace"), end


def grown(path: Path, position: int) -> tuple[str, int]:
    """What was written after `position` up to its last whole line (all of it after a truncation)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", 0
    if size < position:
        position = 0  # truncated or replaced: start again
    if size == position:
        return "", position
    with path.open("rb") as f:
        f.seek(position)
        data = f.read(size - position)
    whole = data[: data.rfind(b"\n") + 1]
    return whole.decode("utf-8", "replace"), position + len(whole)


def _print(path: Path, text: str, width: int) -> None:
    for line in text.splitlines():
        typer.echo(f"{path.stem:<{width}} | {line}" if width else line)
