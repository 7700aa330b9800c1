"""Replicas in consumer groups, measured on `agentlog up`: how long a SIGKILLed replica's
partitions wait for an owner (takeover), and turns per second with 1, 2 and 4 replicas of the
model worker at a fixed model latency and a fixed number of calls in flight per replica (a
pod's capacity). Called by `python -m bench.scale` (`--replicas-only` runs just these).
Not a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

from agentlog.testing.up import agentlog_up

LATENCY_MS = 100  # the offline model's fixed latency per call
PER_REPLICA = 4  # model calls in flight per replica (AGENTLOG_MODEL_CONCURRENCY)


@contextmanager
def stack(replicas: str, partitions: int = 8) -> Iterator[tuple[Path, dict[str, Any]]]:
    """`agentlog up --replicas …` in a temporary directory, until the block ends."""
    env = {
        "AGENTLOG_OFFLINE_MODEL_LATENCY_MS": str(LATENCY_MS),
        "AGENTLOG_MODEL_CONCURRENCY": str(PER_REPLICA),
        "AGENTLOG_CONSUMER_GROUPS": "true",  # also with one replica: the same path
    }
    args = ("--partitions", str(partitions), "--replicas", replicas)
    with tempfile.TemporaryDirectory(prefix="agentlog-replicas-") as tmp:
        with agentlog_up(Path(tmp), *args, env=env) as (_, info):
            yield Path(tmp), info


async def drive(info: dict[str, Any], sessions: int, turns: int, prefix: str) -> float:
    """Post `turns` turns in each of `sessions` sessions (one after another per session, the
    sessions at once), each waited for; returns the seconds it took."""
    headers = {"Authorization": f"Bearer {info['api_token']}"}
    async with httpx.AsyncClient(base_url=info["api_url"], headers=headers, timeout=300) as client:

        async def one(sid: str) -> None:
            for n in range(turns):
                r = await client.post(
                    f"/v1/sessions/{sid}/messages",
                    params={"wait": 120},
                    json={"content": f"turn {n}"},
                    headers={"Idempotency-Key": f"{sid}-{n}"},
                )
                if r.status_code != 200 or r.json().get("status") != "completed":
                    raise RuntimeError(f"{sid}-{n}: {r.status_code} {r.text[:300]}")

        started = time.monotonic()
        await asyncio.gather(*(one(f"{prefix}{i}") for i in range(sessions)))
        return time.monotonic() - started


def throughput(replicas: int, sessions: int = 64, turns: int = 3) -> dict[str, Any]:
    """Turns per second with `replicas` model workers (after a warm-up that waits out the
    groups' joins)."""
    with stack(f"model={replicas}") as (_, info):
        asyncio.run(drive(info, 4, 1, "warm"))
        _settled(info["database_url"], replicas)
        took = asyncio.run(drive(info, sessions, turns, "load"))
    return {
        "replicas": replicas,
        "turns": sessions * turns,
        "seconds": took,
        "turns_per_s": sessions * turns / took,
    }


def _settled(database_url: str, replicas: int, quiet_s: float = 5, within: float = 120) -> None:
    """Wait until every model worker replica owns partitions and none was claimed for
    `quiet_s`: the group's joins are over, so no rebalance pauses the measured load."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        owners = _owners(database_url)
        latest = max((at for _, at in owners.values()), default=time.time())
        if len({o for o, _ in owners.values()}) >= min(replicas, 8) and time.time() - latest > quiet_s:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the model workers' group did not settle in {within} s")


def _pid(cwd: Path, name: str) -> int:
    procs = json.loads((cwd / ".agentlog" / "stack.json").read_text())["processes"]
    return int(next(p["pid"] for p in procs if p["name"] == name))


def _owners(database_url: str) -> dict[int, tuple[str, float]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT log_partition, owner, extract(epoch FROM claimed_at) FROM partition_owners"
            " WHERE consumer = 'model-worker'"
        ).fetchall()
    return {int(p): (str(owner), float(at)) for p, owner, at in rows}


def takeover(kills: int = 5) -> dict[str, Any]:
    """Seconds from a SIGKILL of a model worker replica until every partition it owned is
    claimed again (by the other replica or by its restart, whichever the group picks), with
    a trickle of turns going on."""
    waits: list[float] = []
    with stack("model=2") as (cwd, info):
        asyncio.run(drive(info, 4, 1, "warm"))
        for k in range(kills):
            before = _owners(info["database_url"])
            victim = "model-worker-1"
            lost = {p for p, (owner, _) in before.items() if owner == victim}
            if not lost:
                victim, lost = "model-worker-2", {p for p, (o, _) in before.items() if o == "model-worker-2"}
            killed_at = time.time()
            os.kill(_pid(cwd, victim), signal.SIGKILL)
            deadline = time.monotonic() + 120
            while True:
                now = _owners(info["database_url"])
                if all(now[p][1] > killed_at for p in lost):
                    waits.append(max(now[p][1] for p in lost) - killed_at)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"partitions {sorted(lost)} not taken over in 120 s")
                time.sleep(0.05)
            asyncio.run(drive(info, 4, 1, f"after{k}-"))  # served again
            time.sleep(3)
    return {"kills": kills, "waits_s": waits, "p50_s": statistics.median(waits)}
