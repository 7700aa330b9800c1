"""Named crash points for fault tests, armed by AGENTLOG_FAILPOINTS (`name=kill[@N],...`).

`kill@N` sends SIGKILL to this process the Nth time the point is reached (default 1st).
"""

from __future__ import annotations

import os
import signal

_armed: dict[str, int] = {}
_hits: dict[str, int] = {}


def arm(spec: str) -> None:
    """Arm the failpoints of a spec such as `projector.mid_batch=kill@3`."""
    _armed.clear()
    _hits.clear()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        kind, _, count = action.partition("@")
        if kind != "kill":
            raise ValueError(f"unknown failpoint action {action!r} in {item!r}")
        _armed[name] = int(count or 1)


def hit(name: str) -> None:
    """Mark that a failpoint was reached; dies there if it is armed for this hit."""
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
