"""Named fault points for fault tests, armed by AGENTLOG_FAILPOINTS (`name=kill[@N],...`).

`kill@N` sends SIGKILL to this process the Nth time the point is reached (default 1st).
`sleep:S@N` blocks the calling thread for S seconds the Nth time only: the process's event
loop stalls, as behind a handler that hogs the CPU or makes a blocking call, while threads
of its own (faust's consumer thread, its heartbeats) run on.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_armed: dict[str, Failpoint] = {}
_hits: dict[str, int] = {}


@dataclass(frozen=True)
class Failpoint:
    """What an armed point does (`sleep_s` None: SIGKILL) and on which hit."""

    at: int
    sleep_s: float | None = None


def arm(spec: str) -> None:
    """Arm the failpoints of a spec such as `projector.mid_batch=kill@3,reactor.after_consume=sleep:8@2`."""
    _armed.clear()
    _hits.clear()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        kind, _, count = action.partition("@")
        try:
            at = int(count or 1)
            sleep_s = float(kind.removeprefix("sleep:")) if kind.startswith("sleep:") else None
        except ValueError:
            raise ValueError(f"bad failpoint action {action!r} in {item!r}") from None
        if kind == "kill":
            _armed[name] = Failpoint(at)
        elif sleep_s is not None and sleep_s > 0:
            _armed[name] = Failpoint(at, sleep_s)
        else:
            raise ValueError(f"unknown failpoint action {action!r} in {item!r}")


def hit(name: str) -> None:
    """Mark that a failpoint was reached; dies (or stalls) there if it is armed for this hit."""
    point = _armed.get(name)
    if point is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if point.sleep_s is not None:
        if _hits[name] == point.at:
            log.warning("failpoint %s: stalling for %g s", name, point.sleep_s)
            time.sleep(point.sleep_s)  # blocking on purpose: the stall is the fault
    elif _hits[name] >= point.at:
        os.kill(os.getpid(), signal.SIGKILL)
