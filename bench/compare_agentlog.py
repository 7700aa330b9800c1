"""bench.compare's agentlog side: `agentlog up` as a user runs it (its own broker, the api and
every worker role in processes of their own, the offline model at a fixed latency) on a fresh
database of the shared Postgres server, driven through the api with `?wait` (a turn is done
when its completion is projected into Postgres).

Counted for it: every process of the stack (the supervisor, the broker, the api, each
worker) and the Postgres server with its backends. Before the load, the idle stack's CPU;
with a profile directory, py-spy records the api and the workers during the load. After it,
the same turns with fewer sessions at once (the latency target is set at 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from agentlog.testing.stack import create_database
from agentlog.testing.up import agentlog_up
from bench import profile
from bench.procstat import Watched, idle_cpu
from bench.workload import Run, Workload, drive, measured

STACK = "agentlog up (the stack)"  # `agentlog up` and every process it runs, counted whole
PROFILED = ("api", "reactor", "model-worker", "tool-worker", "projector")


@dataclass(frozen=True)
class Options:
    """What else to measure around the load."""

    idle_s: float = 0  # idle CPU over this many seconds before the load (0: not measured)
    settle_s: float = 5  # quiet time after the warm-up, before the idle measure
    profile_dir: Path | None = None  # py-spy's raw stacks per process, if given
    partitions: int = 8
    light_sessions: int = 10  # then the same turns with this many sessions (0: not run)


@dataclass
class Side:
    """What the agentlog side measured: the load, then the same turns with fewer sessions."""

    runs: list[Run]
    idle_pct: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)  # processes that died under the load
    logs: Path | None = None  # the stack's logs, kept when one died


def idle_total(per_process: dict[str, float]) -> float:
    """The whole stack's and Postgres' share of a core, from `idle_cpu`'s readings."""
    return per_process.get(STACK, 0.0) + per_process.get("postgres", 0.0)


def _watched(up_pid: int, info: dict[str, Any], postgres_pid: int) -> list[Watched]:
    """The stack counted whole (`agentlog up` and all it runs, a restarted worker too) and
    Postgres; each process of the stack shown on its own as well."""
    procs = [Watched(str(p["name"]), int(p["pid"]), in_total=False) for p in info["processes"]]
    stack = Watched(STACK, up_pid, children=True)
    return [stack, *procs, Watched("postgres", postgres_pid, children=True)]


def _restarted(cwd: Path, info: dict[str, Any], keep: Path) -> list[str]:
    """The processes `agentlog up` restarted since `info` was read; their logs kept in `keep`."""
    now = json.loads((cwd / ".agentlog" / "stack.json").read_text())
    before = {p["name"]: p["pid"] for p in info["processes"]}
    gone = sorted(p["name"] for p in now["processes"] if before.get(p["name"]) != p["pid"])
    if gone:
        shutil.copytree(cwd / ".agentlog" / "logs", keep, dirs_exist_ok=True)
    return gone


async def _load(info: dict[str, Any], work: Workload, watched: list[Watched], options: Options) -> Side:
    headers = {"Authorization": f"Bearer {info['api_token']}"}
    retries: list[str] = []
    # A client of its own per session (one keep-alive connection each), as separate producers
    # would be: a hundred sessions sharing one httpx pool spent seconds in it (traced: the
    # slow turns' time passed before the api saw the request), a delay of the load's client.
    async with contextlib.AsyncExitStack() as clients:
        of: dict[str, httpx.AsyncClient] = {}

        async def client_of(sid: str) -> httpx.AsyncClient:
            if sid not in of:
                of[sid] = await clients.enter_async_context(
                    httpx.AsyncClient(base_url=info["api_url"], headers=headers, timeout=300)
                )
            return of[sid]

        async def turn(sid: str, n: int) -> None:
            client = await client_of(sid)
            while True:
                r = await client.post(
                    f"/v1/sessions/{sid}/messages",
                    params={"wait": 240},
                    json={"content": work.content(sid, n)},
                    headers={"Idempotency-Key": f"{sid}-{n}"},
                )
                if r.status_code != 503:
                    break
                # Busy (no pooled connection in time): a client retries after Retry-After, the
                # same key answering the same turn; the retry is in the turn's latency.
                retries.append(sid)
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            if r.status_code != 200 or r.json().get("status") != "completed":
                raise RuntimeError(f"agentlog turn {n} of {sid}: {r.status_code} {r.text[:300]}")

        await drive(turn, min(work.sessions, 10), 1, "warm")
        retries.clear()
        idle: dict[str, float] = {}
        if options.idle_s:
            await asyncio.sleep(options.settle_s)
            idle = await asyncio.to_thread(idle_cpu, watched, options.idle_s)
        profiler = None
        if options.profile_dir is not None:
            profiler = profile.Profiler(options.profile_dir, [w for w in watched if w.name in PROFILED])
            await asyncio.sleep(1)  # py-spy attached
        url = info["database_url"]
        runs = [await measured("agentlog", turn, work, watched, url, "s")]
        runs[0].retries = len(retries)
        profiles = profiler.stop() if profiler is not None else {}
        if 0 < options.light_sessions < work.sessions:
            retries.clear()
            light = replace(work, sessions=options.light_sessions)
            runs.append(await measured("agentlog", turn, light, watched, url, "l"))
            runs[1].retries = len(retries)
    return Side(runs, idle, profiles)


def run(server_uri: str, work: Workload, postgres_pid: int, options: Options) -> Side:
    """The workload through a fresh `agentlog up` on a new database of the server at `server_uri`."""
    env = {
        "AGENTLOG_DATABASE_URL": create_database(server_uri),
        "AGENTLOG_OFFLINE_MODEL_LATENCY_MS": str(work.latency_ms),
    }
    with tempfile.TemporaryDirectory(prefix="agentlog-compare-") as tmp:
        with agentlog_up(Path(tmp), "--partitions", str(options.partitions), env=env) as (proc, info):
            watched = _watched(proc.pid, info, postgres_pid)
            side = asyncio.run(_load(info, work, watched, options))
            keep = Path(tempfile.gettempdir()) / f"agentlog-compare-logs-{os.getpid()}-{work.latency_ms}"
            side.restarted = _restarted(Path(tmp), info, keep)
            side.logs = keep if side.restarted else None
    return side
