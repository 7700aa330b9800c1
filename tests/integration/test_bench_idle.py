"""bench.scale --idle-in-postgres's parts: the idle sessions are projected as the projector
writes them, and its tables show every size and process. (Its `agentlog up` run takes half a
minute even at a tiny size: it is run by hand, `python -m bench.scale --idle-in-postgres 300
--turns 20`.)
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from rich.console import Console

from agentlog.testing.stack import create_database
from bench import idle
from eventstore import store

pytestmark = pytest.mark.services

SESSIONS = 40


def test_the_tables_show_each_size_and_process() -> None:
    fill = idle.Fill(sessions=100_000, events=600_000, wall_s=100.0, apply_s=80.0)
    rss = {"reactor": 112.0, "subagent-worker": 108.0}
    result = idle.Result(
        fill,
        database_mb=486.0,
        rss_start_mb=rss,
        rss_after_mb={name: (mb + 27, mb + 28) for name, mb in rss.items()},
        first_turns_s=[0.5, 0.6, 2.0],
        second_turns_s=[0.4, 0.5, 1.0],
        first_wall_s=0.5,
        second_wall_s=1.5,
    )
    console = Console(record=True, width=200)
    for table in idle.tables([result]):
        console.print(table)
    text = console.export_text()
    assert "6,000 (7,500)" in text  # events/s of the whole fill and of the projection alone
    assert (
        "600 / 2,000" in text
        and "112 / 139 (140)" in text
        and "6.0 / 2.0" in text
        and "subagent-worker" in text
    )
    assert result.as_dict()["first_turn_ms"]["p50"] == pytest.approx(600)


def test_the_fill_writes_the_projectors_rows_in_the_old_epoch(pg_server: str) -> None:
    """Every idle session's rows, in the old epoch, each partition's offsets from 0 up."""
    url = create_database(pg_server)
    asyncio.run(store.migrate(url))
    filled = asyncio.run(idle.fill(url, SESSIONS))
    with psycopg.connect(url) as conn:
        events = conn.execute(
            "SELECT count(*), count(DISTINCT session_id), min(log_epoch), max(log_epoch) FROM events"
        ).fetchone()
        gaps = conn.execute(
            "SELECT log_partition, count(*), max(log_offset) FROM events GROUP BY log_partition"
        ).fetchall()
        turns = conn.execute("SELECT count(*) FROM turns WHERE status = 'completed'").fetchone()
    assert events == (SESSIONS * 6, SESSIONS, idle.OLD_EPOCH, idle.OLD_EPOCH)
    assert filled.events == SESSIONS * 6
    assert all(count == top + 1 for _, count, top in gaps)
    assert turns == (SESSIONS,)
