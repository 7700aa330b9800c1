"""CPU and memory of a benchmark's processes, read from the kernel (psutil over /proc).

A process is followed by pid and name; with `children`, the processes it forked count too
(a Postgres server's backends, which come and go with connections: one that exited while
measured is counted through its parent's reaped-children times).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Watched:
    """A process to measure: its name in the table, its pid, whether its children count."""

    name: str
    pid: int
    children: bool = False
    in_total: bool = True  # False: shown on its own, counted already in another's children


def _cpu(proc: psutil.Process, children: bool) -> float:
    times = proc.cpu_times()
    total = float(times.user + times.system)
    if not children:
        return total
    total += float(times.children_user + times.children_system)
    for child in proc.children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # it exited between listing and reading: its parent's reaped times have it
        total += float(t.user + t.system)
    return total


def cpu_seconds(watched: list[Watched]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used since it started; NaN for one that
    is gone (a restarted worker: its parent's reaped-children times have it)."""
    out: dict[str, float] = {}
    for w in watched:
        try:
            out[w.name] = _cpu(psutil.Process(w.pid), w.children)
        except psutil.NoSuchProcess:
            out[w.name] = math.nan
    return out


def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds used between two readings of `cpu_seconds`, per process (NaN if it died)."""
    return {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}


def total(watched: list[Watched], used: Mapping[str, float]) -> float:
    """The CPU seconds of the processes counted in the total."""
    return sum(used[w.name] for w in watched if w.in_total)


def idle_cpu(watched: list[Watched], seconds: float) -> dict[str, float]:
    """Each process's CPU as % of one core over `seconds` of wall time (nothing driven)."""
    before = cpu_seconds(watched)
    t0 = time.monotonic()
    time.sleep(seconds)
    used = spent(before, cpu_seconds(watched))
    wall = time.monotonic() - t0
    return {name: 100 * s / wall for name, s in used.items()}


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(watched: list[Watched]) -> dict[str, tuple[float, float]]:
    """Each process's resident memory now and at its peak (VmRSS, VmHWM), in MB; with
    `children`, the sum over the process and its children (a Postgres server's backends
    share their buffers, so that sum overstates it)."""
    out: dict[str, tuple[float, float]] = {}
    for w in watched:
        pids = [w.pid]
        if w.children and psutil.pid_exists(w.pid):
            pids += [c.pid for c in psutil.Process(w.pid).children(recursive=True)]
        now = peak = 0
        for pid in pids:
            try:
                now += _status_kb(pid, "VmRSS")
                peak += _status_kb(pid, "VmHWM")
            except (FileNotFoundError, ProcessLookupError):
                continue
        out[w.name] = (now / 1024, peak / 1024)
    return out


def postmaster_pid(server_uri: str) -> int:
    """The pid of the Postgres server at `server_uri` (on this machine): its backends' parent."""
    import psycopg

    with psycopg.connect(server_uri) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        if row is None:
            raise RuntimeError("Postgres did not tell its backend's pid")
        return psutil.Process(int(row[0])).ppid()  # while the backend lives


STATS_LAG_S = 1.5  # Postgres publishes a backend's counters within a second of its transactions


def transactions(database_url: str) -> int:
    """Transactions committed or rolled back in the database so far, as Postgres counts them
    (each statement outside a transaction is one). Its counters lag by up to a second."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row is not None else 0
