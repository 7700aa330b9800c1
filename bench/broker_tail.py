"""What the embedded broker spends as its in-memory log grows: per append, and per fetch of a
consumer at the log's tail (as every worker reads), at growing numbers of records.

    python -m bench.broker_tail [--sizes 0,20000,50000,100000] [--probes 100]

The log is filled with idle sessions (`scale.idle_session`) through `KafkaLog.append_many`;
at each size, `--probes` single appends, each read back by a consumer assigned every
partition from its end (fetch wait 10 ms, as a busy worker's): the hop's latency and the
broker's CPU seconds (user + system) per hop. bench.scale --idle-in-postgres saw turns slow
down as the new log grew; this isolates the broker's part. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from agentlog.testing.stack import Broker
from bench.scale import idle_session
from eventstore import codec
from eventstore import events as ev
from eventstore import log as kafka_log
from eventstore.log import KafkaLog
from eventstore.settings import Settings

PARTITIONS = 8
# The table: (column, key of a row, format).
COLUMNS = (
    ("records", "records", ",.0f"),
    ("append ms", "append_ms", ".2f"),
    ("broker CPU ms / append", "append_cpu_ms", ".2f"),
    ("tail hop p50 ms", "hop_p50_ms", ".1f"),
    ("broker CPU ms / hop", "broker_cpu_per_hop_ms", ".1f"),
    ("RSS MB", "rss_mb", ".0f"),
)


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _fill(kafka: KafkaLog, start: int, target: int) -> int:
    """Append idle sessions until the log holds at least `target` records; the count."""
    batch: list[ev.Event] = []
    count = start
    while count < target:
        batch += idle_session(f"tail-{count}")
        count += 6
        if len(batch) >= 5000:
            await kafka.append_many(batch)
            batch = []
    if batch:
        await kafka.append_many(batch)
    return count


async def _hops(
    kafka: KafkaLog, bootstrap: str, broker: psutil.Process, probes: int, tag: str
) -> dict[str, float]:
    """`probes` appends each read back at the tail: latency p50 and broker CPU per hop, in ms."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [TopicPartition(codec.EVENTS_TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        hops: list[float] = []
        before = _cpu(broker)
        for i in range(probes):
            t0 = time.perf_counter()
            await kafka.append(ev.user_message("probe", text="hi", idempotency_key=f"{tag}-{i}"))
            while not await consumer.getmany(timeout_ms=5000):
                pass
            hops.append(time.perf_counter() - t0)
        cpu = _cpu(broker) - before
    finally:
        await consumer.stop()
    return {"hop_p50_ms": statistics.median(hops) * 1000, "broker_cpu_per_hop_ms": cpu / probes * 1000}


async def measure(sizes: list[int], probes: int) -> list[dict[str, float]]:
    """One broker, filled to each size in turn."""
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="agentlog-broker-tail-") as tmp:
        broker = Broker(Path(tmp))
        try:
            settings = Settings(
                kafka_bootstrap=broker.bootstrap, partitions=PARTITIONS, metrics_enabled=False
            )
            await kafka_log.ensure_topics(settings)
            kafka = KafkaLog(settings)
            await kafka.start()
            proc = psutil.Process(broker.proc.pid)
            records = 0
            try:
                for size in sizes:
                    records = await _fill(kafka, records, size)
                    await asyncio.sleep(1)
                    before = _cpu(proc)
                    t0 = time.perf_counter()
                    for i in range(probes):
                        await kafka.append(
                            ev.user_message("probe", text="hi", idempotency_key=f"a{size}-{i}")
                        )
                    append_ms = (time.perf_counter() - t0) / probes * 1000
                    append_cpu = (_cpu(proc) - before) / probes * 1000
                    hop = await _hops(kafka, broker.bootstrap, proc, probes, f"h{size}")
                    rss = proc.memory_info().rss / 1024**2
                    rows.append(
                        {
                            "records": records,
                            "append_ms": append_ms,
                            "append_cpu_ms": append_cpu,
                            "rss_mb": rss,
                        }
                        | hop
                    )
            finally:
                await kafka.stop()
        finally:
            broker.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,20000,50000,100000", help="records in the log, comma-separated")
    parser.add_argument(
        "--probes", type=int, default=100, help="appends and hops per size (CPU ticks are 10 ms)"
    )
    args = parser.parse_args()
    rows = asyncio.run(measure([int(s) for s in args.sizes.split(",")], args.probes))
    table = Table(title="the embedded broker as its in-memory log grows (one consumer at the tail)")
    for column, _, _ in COLUMNS:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(format(row[key], spec) for _, key, spec in COLUMNS))
    Console().print(table)


if __name__ == "__main__":
    main()
