"""bench.parts runs end to end at tiny sizes and reports every row it promises.

No timing is asserted (the machine is noisy): only that each measure exists and is positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from bench.parts import Sizes, run, table, write_json

pytestmark = pytest.mark.services

TINY = Sizes(posts=40, clients=4, events=300, session=100, turns=2, latency_ms=20, sealed=200)


async def test_bench_parts_reports_every_part(pg_server: str, log_dir: Path, tmp_path: Path) -> None:
    rows = await run(pg_server, log_dir, TINY)
    measures = {(row.part, row.measure) for row in rows}
    expected = {
        ("ingest", "POST message → acked"),
        ("ingest", "POST latency p99"),
        ("ingest", "KafkaLog.append"),
        ("ingest", "KafkaLog.append_many"),
        ("projection", "log → Postgres, fresh projector"),
        ("replay", "fold alone (in memory)"),
        ("replay", "one session from the log"),
        ("replay", "one session from Postgres"),
        ("sealing", "encode+decode, in clear"),
        ("sealing", "encode+decode, sealed"),
        ("sealing", "Records.encode+decode, sealed"),
        ("sealing", "data key made (a new session)"),
        ("decode", "from bytes (validate_json)"),
        ("decode", "through a dict (json.loads)"),
    }
    for latency in (20, 0):
        part = f"step overhead (L={latency} ms)"
        expected |= {
            (part, "per step, decided in the log p50"),
            (part, "per step, visible in Postgres p95"),
            (part, "hop: reactor p50"),
            (part, "hop: model worker p50"),
            (part, "hop: tool worker p50"),
            (part, "hop: projection lag p50"),
        }
    assert expected <= measures
    rates = [row for row in rows if row.unit in ("req/s", "events/s")]
    assert rates and all(row.value > 0 for row in rates)
    per_step = [row for row in rows if "per step" in row.measure]
    # A step's overhead is its time beyond the model's: it cannot be negative.
    assert per_step and all(row.value > 0 for row in per_step)

    console = Console(record=True, width=200)
    console.print(table(rows, "tiny"))
    assert "fresh projector" in console.export_text()
    out = tmp_path / "parts.json"
    write_json(out, rows, TINY)
    document = json.loads(out.read_text())
    assert document["sizes"]["events"] == TINY.events
    assert len(document["rows"]) == len(rows) and document["rows"][0]["part"] == "ingest"
