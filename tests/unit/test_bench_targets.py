"""bench.targets reads bench.parts' rows and bench.compare's runs into issue 15's targets, and
bench.profile ranks py-spy's collapsed stacks: both on made-up inputs, no services."""

from __future__ import annotations

import json
from pathlib import Path

from bench import targets
from bench.compare_agentlog import STACK
from bench.profile import summary
from bench.workload import Run, Workload


def _run(system: str, sessions: int, latency_ms: int, seconds: list[float]) -> Run:
    work = Workload(sessions=sessions, turns=1, latency_ms=latency_ms)
    return Run(system, work, wall_s=1.0, latencies_s=seconds, rss_mb={"reactor": (90.0, 120.0)})


def test_targets_from_runs_and_parts(tmp_path: Path) -> None:
    rows = [
        {"part": "ingest", "measure": "POST message → acked", "value": 2500.0, "unit": "req/s", "notes": ""},
        {
            "part": "projection",
            "measure": "log → Postgres, fresh projector",
            "value": 5000.0,
            "unit": "events/s",
            "notes": "",
        },
        {
            "part": "replay",
            "measure": "fold alone (in memory)",
            "value": 1e6,
            "unit": "events/s",
            "notes": "",
        },
        {
            "part": "replay",
            "measure": "one session from Postgres",
            "value": 50_000.0,
            "unit": "events/s",
            "notes": "1000 events in 20 ms",
        },
    ]
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"rows": rows}))
    runs = [
        _run("agentlog", 100, 0, [0.5] * 30),  # 30 turns/s
        _run("LangGraph", 100, 0, [0.5] * 10),  # 10 turns/s
        _run("agentlog", 10, 100, [0.13, 0.14, 0.2]),
    ]
    idle = {STACK: 2.3, "postgres": 0.2, "broker": 2.0, "reactor": 0.5}  # the stack counts them
    table = targets.table(runs, idle, parts)
    assert table[:2] == ["| target | reached | met |", "|---|---|---|"]
    got = {row.split(" | ")[0].lstrip("| "): row for row in table[2:]}
    assert got["turns/s at L = 0, 100 sessions × 1 turns: ≥ 10× LangGraph's"].endswith("3.00× | **no** |")
    assert (
        "140 ms (+40 ms) | yes" in got["turn latency p50 with 10 sessions: ≤ 50 ms above the model's 100 ms"]
    )
    assert got["ingest ≥ 2,000 POST/s"].endswith("| yes |")
    assert got["projection ≥ 25,000 events/s"].endswith("| **no** |")
    assert "| 1.0 ms | yes |" in got["a 1,000-event session folded ≤ 2 ms"]
    assert "| 20.0 ms | **no** |" in got["a 1,000-event session loaded from Postgres ≤ 10 ms"]
    assert "2.5 % (broker 2.0, reactor 0.5) | yes" in got["an idle stack < 3 % of a core"]
    assert got["memory at 100 sessions at once (peak RSS MB)"].endswith("| reactor 120 | — |")


def test_profile_summary_sets_waits_and_sends_apart(tmp_path: Path) -> None:
    root = str(Path(targets.__file__).resolve().parent.parent)
    loop = "run (asyncio/runners.py:44);select (/usr/lib/python3.11/selectors.py:468)"
    raw = tmp_path / "api.txt"
    raw.write_text(
        f"process 1;{loop.replace('select (', 'EpollSelector.select (')} 60\n"
        f"process 1;turn_view ({root}/eventstore/reads.py:143);"
        "BaseCursor._send_query_prepared (/venv/lib/python3.11/site-packages/psycopg/_cursor_base.py:9) 30\n"
        f"process 1;turn_view ({root}/eventstore/reads.py:150);"
        "loads (/usr/lib/python3.11/json/__init__.py:346) 10\n"
    )
    text = summary(raw)
    assert text.startswith("100 samples, 40 active (40 %), of which 30 (75 %) on a socket send")
    assert "| turn_view (eventstore/reads.py) | 100.0 |" in text  # both kinds, by the function
    assert "| json | 100.0 |" in text and "| loads (json/__init__.py) | 100.0 |" in text
