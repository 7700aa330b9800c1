"""bench.compare runs end to end at a tiny size and reports every row it promises.

No timing is asserted (the machine is noisy): only that both systems ran every turn, that
CPU and memory were read from the processes that did the work, and the tables and JSON.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console

from bench import targets
from bench.compare import as_json, markdown, measure, tables
from bench.compare_agentlog import STACK, Options
from bench.workload import Workload

pytest.importorskip("langgraph", reason="bench.compare needs the compare extra")
pytestmark = pytest.mark.services

TINY = Workload(sessions=2, turns=2, tools=True)


async def test_bench_compare_runs_both_systems(pg_server: str) -> None:
    options = Options(idle_s=0.5, settle_s=0, light_sessions=1)
    result = await asyncio.to_thread(measure, pg_server, TINY, [0], options)
    # The load, then the same turns with one session, through each system.
    assert [(r.system, r.workload.sessions) for r in result.runs] == [
        ("agentlog", 2),
        ("agentlog", 1),
        ("LangGraph", 2),
        ("LangGraph", 1),
    ]
    for run in result.runs:
        assert run.turns == run.workload.sessions * TINY.turns and run.turns_per_s > 0
        # Postgres's CPU in a load this small can be under one clock tick (10 ms): measured, not
        # asserted positive; its memory and the whole system's CPU are.
        assert run.cpu_s["postgres"] >= 0 and run.rss_mb["postgres"][0] > 0 and run.cpu_total_s > 0
        assert run.transactions > 0  # each system's own database, counted by Postgres
    mine, theirs = result.runs[0], result.runs[2]
    # The stack's every process was followed: the broker, the api and each worker role, and
    # the stack whole (what it counts: a worker restarted under the load would be gone).
    assert {"broker", "api", "reactor", "model-worker", "tool-worker", "projector"} <= set(mine.cpu_s)
    assert mine.cpu_total_s == pytest.approx(mine.cpu_s[STACK] + mine.cpu_s["postgres"])
    assert mine.cpu_s[STACK] >= mine.cpu_s["api"] + mine.cpu_s["reactor"]
    assert set(theirs.cpu_s) == {"langgraph", "postgres"} and theirs.cpu_s["langgraph"] > 0
    assert {"broker", "api", "reactor"} <= set(result.idle_pct)
    assert all(pct >= 0 for pct in result.idle_pct.values())

    rows = markdown(result)
    assert sum("| agentlog / LangGraph |" in row for row in rows) == 2
    met = targets.table(result.runs, result.idle_pct, None)
    assert any(row.startswith("| turns/s at L = 0, 2 sessions × 2 turns") for row in met)
    assert any(row.startswith("| an idle stack < 3 % of a core") for row in met)
    console = Console(record=True, width=200)
    for table in tables(result):
        console.print(table)
    assert "agentlog vs LangGraph: 2 sessions × 2 turns" in console.export_text()
    document = json.loads(json.dumps(as_json(result)))
    assert [r["turns"] for r in document["runs"]] == [4, 2, 4, 2]
    assert document["runs"][0]["workload"]["tools"] is True
