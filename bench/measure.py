"""The log-side parts of bench.parts: ingest through the api, projection into Postgres, replay.

Each function takes a fresh stack (its own broker and database) and returns table rows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from agentlog import devstack
from agentlog.replay import replay
from bench.synthetic import EVENTS_PER_TURN, sessions_of, tool_session
from eventstore import events as ev
from eventstore import log as kafka_log
from eventstore.log import KafkaLog
from eventstore.state import fold
from processors.model.offline import OFFLINE_MODEL
from tests.services import Stack, projected, wait_until


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    part: str
    measure: str
    value: float
    unit: str
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pct(samples: list[float], q: float) -> float:
    """The q-quantile by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_rows(part: str, what: str, seconds: list[float], notes: str = "") -> list[Row]:
    """p50/p95/p99 rows of latencies given in seconds."""
    return [
        Row(part, f"{what} p{round(q * 100)}", pct(seconds, q) * 1000, "ms", notes if q == 0.5 else "")
        for q in (0.5, 0.95, 0.99)
    ]


def _api_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOG_")}
    s = stack.settings
    env.update(
        AGENTLOG_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        AGENTLOG_DATABASE_URL=s.database_url,
        AGENTLOG_PARTITIONS=str(s.partitions),
        AGENTLOG_AUTH_REQUIRED="false",
        AGENTLOG_WORKSPACE_ROOT=str(s.workspace_root),
    )
    return env


def _spawn_api(stack: Stack, logs: Path, port: int) -> subprocess.Popen[bytes]:
    with open(logs / f"api-{port}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentlog", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=_api_env(stack),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _api_process(stack: Stack, logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`agentlog api` in its own process, as `agentlog up` runs it; answers once ready."""
    port = devstack.free_port()
    proc = _spawn_api(stack, logs, port)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"the api exited with {proc.returncode}; see {logs}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    proc.terminate()
    raise RuntimeError("the api did not get ready in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def concurrently(
    clients: int, per_client: int, one: Callable[[int, int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """`clients` loops of `per_client` sequential calls at once: wall time and each latency."""
    latencies: list[float] = []

    async def loop(c: int) -> None:
        for i in range(per_client):
            t0 = time.perf_counter()
            await one(c, i)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in range(clients)))
    return time.perf_counter() - t0, latencies


async def ingest(stack: Stack, logs: Path, posts: int, clients: int) -> list[Row]:
    """POST → 202 once the log acked it, beside KafkaLog.append from as many clients."""
    per_client = max(1, posts // clients)
    await kafka_log.ensure_topics(stack.settings)
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    try:
        # The sessions exist before the clock starts, so each post appends one event.
        await kafka.append_many([ev.session_started(f"i{c}", model=OFFLINE_MODEL) for c in range(clients)])
        await stack.start("projector")
        await wait_until(lambda: projected(stack, clients), interval=0.02)
        await stack.stop_role("projector")
        proc, url = await _api_process(stack, logs)
        resent: list[int] = []
        try:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

                async def post(c: int, i: int, tag: str = "m") -> None:
                    for attempt in range(3):
                        try:
                            r = await client.post(
                                f"/v1/sessions/i{c}/messages",
                                json={"content": f"message {i}"},
                                headers={"Idempotency-Key": f"{tag}{i}"},
                            )
                            break
                        except httpx.TransportError:
                            # A kept-alive connection the server closed as it was reused (seen
                            # on a loaded machine): sent again, the same key, one post.
                            resent.append(c)
                            if attempt == 2:
                                raise
                    if r.status_code != 202:
                        raise RuntimeError(f"post answered {r.status_code}: {r.text[:300]}")

                await asyncio.gather(*(post(c, 0, "warm") for c in range(clients)))
                wall, api = await concurrently(clients, per_client, post)
        finally:
            _stop(proc)

        async def append(c: int, i: int) -> None:
            await kafka.append(ev.user_message(f"a{c}", text=f"message {i}", idempotency_key=str(i)))

        raw_wall, raw = await concurrently(clients, per_client, append)
        batch = [ev.user_message("b", text=f"message {i}", idempotency_key=str(i)) for i in range(posts)]
        t0 = time.perf_counter()
        for start in range(0, len(batch), 500):
            await kafka.append_many(batch[start : start + 500])
        many_took = time.perf_counter() - t0
    finally:
        await kafka.stop()
    n = per_client * clients
    return [
        Row(
            "ingest",
            "POST message → acked",
            n / wall,
            "req/s",
            f"{clients} clients, {n} posts, api process" + (f", {len(resent)} resent" if resent else ""),
        ),
        *latency_rows("ingest", "POST latency", api),
        Row("ingest", "KafkaLog.append", n / raw_wall, "events/s", f"{clients} clients, one event per call"),
        *latency_rows("ingest", "append latency", raw),
        Row("ingest", "KafkaLog.append_many", posts / many_took, "events/s", "batches of 500, one client"),
    ]


def _interleaved(sessions: list[list[ev.Event]]) -> Iterator[ev.Event]:
    """The sessions' events as a busy log holds them: interleaved, each session in its order."""
    for i in range(max(len(s) for s in sessions)):
        for session in sessions:
            if i < len(session):
                yield session[i]


async def _projector_applied(stack: Stack, count: int) -> bool:
    worker = stack.workers.get("projector")
    return worker is not None and worker.applied + worker.dead_letters >= count


async def projection_and_replay(stack: Stack, events: int, session_events: int) -> list[Row]:
    """A fresh projector catching up on a pre-filled log; then one long session replayed."""
    turns = max(1, (session_events - 1) // EVENTS_PER_TURN)
    long = tool_session("long", turns)
    log = [*_interleaved(sessions_of(max(0, events - len(long)), 100, "p")), *long]
    await kafka_log.ensure_topics(stack.settings)
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    try:
        for start in range(0, len(log), 500):
            await kafka.append_many(log[start : start + 500])
    finally:
        await kafka.stop()
    t0 = time.perf_counter()
    await stack.start("projector")
    await wait_until(lambda: _projector_applied(stack, 0), interval=0.001)
    started = time.perf_counter() - t0
    await wait_until(lambda: _projector_applied(stack, len(log)), within=600, interval=0.005)
    took = time.perf_counter() - t0
    rows_present = (await stack.sql("SELECT count(*) FROM events"))[0][0]
    if rows_present != len(log):
        raise RuntimeError(f"projected {rows_present} events of {len(log)}")
    out = [
        Row(
            "projection",
            "log → Postgres, fresh projector",
            len(log) / took,
            "events/s",
            f"{len(log)} events of tool turns in {took:.1f} s (start-up {started:.2f} s)",
        )
    ]
    t0 = time.perf_counter()
    folded = fold("long", long)
    took = time.perf_counter() - t0
    out.append(Row("replay", "fold alone (in memory)", len(long) / took, "events/s", f"{took * 1000:.0f} ms"))
    for source in ("kafka", "postgres"):
        t0 = time.perf_counter()
        state = await replay(stack.settings, "long", source)
        took = time.perf_counter() - t0
        if state != folded:
            raise RuntimeError(f"replay from {source} disagrees with the fold")
        scanned = f", scans its partition (~{len(log) // stack.settings.partitions} records)"
        out.append(
            Row(
                "replay",
                f"one session from {'the log' if source == 'kafka' else 'Postgres'}",
                len(long) / took,
                "events/s",
                f"{len(long)} events in {took * 1000:.0f} ms" + (scanned if source == "kafka" else ""),
            )
        )
    return out
