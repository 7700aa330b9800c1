"""Folding one long session, in µs per event: the fold as it was (tests/unit/reference_fold.py)
beside the linear one, measured in the same run on the same events. Never a test.

    python -m bench.fold [--sizes 1000,4000,10000] [--repeat 3] [--json FILE]

fold        `fold(session_id, events)` from the empty state, best of `--repeat` runs.
reactor     what a reactor does per event of the same session: `evolve` the cached state,
            then fold its own unread reactions (the next event) ahead of it, keeping both.
The sessions are real tool turns made by the pure core (bench.synthetic), nine events a turn.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.synthetic import EVENTS_PER_TURN, tool_session
from eventstore import state
from eventstore.events import Event
from tests.unit import reference_fold as reference

Fold = Callable[..., Any]
Evolve = Callable[[Any, Event], Any]


@dataclass(frozen=True)
class Row:
    """One session length: µs per event of each fold, and whether they made the same state."""

    events: int
    reference_fold_us: float
    linear_fold_us: float
    reference_reactor_us: float
    linear_reactor_us: float
    same_state: bool


def _best_us(run: Callable[[], object], events: int, repeat: int) -> float:
    """The fastest of `repeat` runs, in µs per event (garbage collection left on, as in a worker)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best * 1e6 / events


def _as_reactor(evolve: Evolve, fold: Fold, log: Sequence[Event]) -> Callable[[], object]:
    """Evolve event by event, folding the next event ahead of each state as a branch."""

    def run() -> object:
        cached = fold(log[0].session_id, [])
        for i, event in enumerate(log):
            cached = evolve(cached, event)
            fold(event.session_id, log[i + 1 : i + 2], cached)
        return cached

    return run


def measure(size: int, repeat: int) -> Row:
    """Both folds over one session of about `size` events."""
    log = tool_session("bench", max(1, (size - 1) // EVENTS_PER_TURN), window=8)
    sid = log[0].session_id
    new, old = state.fold(sid, log), reference.fold(sid, log)
    return Row(
        events=len(log),
        reference_fold_us=_best_us(lambda: reference.fold(sid, log), len(log), repeat),
        linear_fold_us=_best_us(lambda: state.fold(sid, log), len(log), repeat),
        reference_reactor_us=_best_us(_as_reactor(reference.evolve, reference.fold, log), len(log), repeat),
        linear_reactor_us=_best_us(_as_reactor(state.evolve, state.fold, log), len(log), repeat),
        same_state=new.public() == old.model_dump(mode="json", exclude={"seen"})
        and frozenset(new.seen) == old.seen,
    )


def table(rows: list[Row]) -> Table:
    """The rows as one rich table, old beside new."""
    out = Table(title=f"agentlog fold: µs per event, one session ({os.cpu_count()} CPUs)")
    for column in ("events", "fold: reference", "fold: linear", "speed-up", "reactor: reference"):
        out.add_column(column, justify="right")
    out.add_column("reactor: linear", justify="right")
    out.add_column("same state")
    for r in rows:
        out.add_row(
            f"{r.events:,}",
            f"{r.reference_fold_us:.1f}",
            f"{r.linear_fold_us:.1f}",
            f"{r.reference_fold_us / r.linear_fold_us:.1f}x",
            f"{r.reference_reactor_us:.1f}",
            f"{r.linear_reactor_us:.1f}",
            "yes" if r.same_state else "NO",
        )
    return out


def main(sizes: list[int], repeat: int, json_path: Path | None) -> None:
    console = Console() if sys.stdout.isatty() else Console(width=140)
    rows = []
    for size in sizes:
        rows.append(measure(size, repeat))
        console.log(f"{rows[-1].events} events measured")
    console.print(table(rows))
    if json_path is not None:
        document = {"benchmark": "bench.fold", "cpus": os.cpu_count(), "rows": [asdict(r) for r in rows]}
        json_path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,4000,10000", help="events per session, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure; the best is shown")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    main([int(s) for s in args.sizes.split(",")], args.repeat, args.json)
