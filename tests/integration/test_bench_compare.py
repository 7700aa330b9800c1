"""bench.compare runs end to end at a tiny size and reports every row it promises.

No timing is asserted (the machine is noisy): only that both systems ran every turn, that
CPU and memory were read from the processes that did the work, and the tables and JSON.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console

from bench.compare import as_json, markdown, measure, tables
from bench.compare_agentlog import Options
from bench.workload import Workload

pytest.importorskip("langgraph", reason="bench.compare needs the compare extra")
pytestmark = pytest.mark.services

TINY = Workload(sessions=2, turns=2, tools=True)


async def test_bench_compare_runs_both_systems(pg_server: str) -> None:
    result = await asyncio.to_thread(measure, pg_server, TINY, [0], Options(idle_s=1, settle_s=0))
    assert [r.system for r in result.runs] == ["agentlog", "LangGraph"]
    for run in result.runs:
        assert run.turns == TINY.sessions * TINY.turns and run.turns_per_s > 0
        assert run.cpu_s["postgres"] > 0 and run.rss_mb["postgres"][0] > 0
        assert run.transactions > 0  # each system's own database, counted by Postgres
    mine, theirs = result.runs
    # The stack's every process was followed: the broker, the api and each worker role.
    assert {"broker", "api", "reactor", "model-worker", "tool-worker", "projector"} <= set(mine.cpu_s)
    assert set(theirs.cpu_s) == {"langgraph", "postgres"} and theirs.cpu_s["langgraph"] > 0
    assert {"broker", "api", "reactor"} <= set(result.idle_pct)
    assert all(pct >= 0 for pct in result.idle_pct.values())

    rows = markdown(result)
    assert any("| agentlog / LangGraph |" in row for row in rows)
    assert rows[-1].startswith("| idle | agentlog stack |")
    console = Console(record=True, width=200)
    for table in tables(result):
        console.print(table)
    assert "agentlog vs LangGraph: 2 sessions × 2 turns" in console.export_text()
    document = json.loads(json.dumps(as_json(result)))
    assert [r["turns"] for r in document["runs"]] == [4, 4]
    assert document["runs"][0]["workload"]["tools"] is True
