"""SIGKILL of a sub-agent worker after it started a child: after a restart the parent
still gets exactly one completion per Task call and finishes its turn."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentlog.replay import events_from_kafka
from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from tests.faults.test_kill import kill_then_recover
from tests.services import Stack, stack_on


async def _done(stack: Stack) -> bool:
    rows = await stack.sql(
        "SELECT t.status FROM turns t JOIN sessions s USING (session_id) WHERE s.depth = 0"
    )
    return rows == [("completed",)]


@pytest.mark.parametrize("point", ["subagent-worker.after_start"])
async def test_a_killed_sub_agent_worker_still_yields_one_completion_per_call(
    point: str, pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        lines = "\n".join(
            "call Task " + json.dumps({"description": "d", "prompt": f"Say {w}."})
            for w in ("one", "two", "three")
        )
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        at = datetime.now(UTC)
        await kafka.append_many(
            [
                ev.session_started("parent", model=OFFLINE_MODEL, at=at),
                ev.user_message("parent", text=lines, idempotency_key="a", at=at),
            ]
        )
        await kafka.stop()
        await kill_then_recover("subagents", stack.settings, log_dir, f"{point}=kill@2", lambda: _done(stack))
        rows = await stack.sql(
            "SELECT payload->>'tool_use_id', count(*) FROM events WHERE session_id = 'parent'"
            " AND type = 'subagent_completed' GROUP BY 1"
        )
        assert len(rows) == 3 and all(n == 1 for _, n in rows)
        copies: dict[Any, set[str]] = defaultdict(set)
        for event in await events_from_kafka(stack.settings, "parent"):
            copies[event.event_id].add(json.dumps(event.payload.model_dump(mode="json"), sort_keys=True))
        assert all(len(bodies) == 1 for bodies in copies.values())
        children = await stack.sql("SELECT count(*) FROM sessions WHERE parent_session_id = 'parent'")
        assert children == [(3,)]  # each started once, whatever the restart re-sent
        output = await stack.sql(
            "SELECT content->0->>'text' FROM messages WHERE session_id = 'parent' AND role = 'assistant'"
            " ORDER BY seq DESC LIMIT 1"
        )
        assert all(f'You said: \\"Say {w}.\\"' in json.dumps(output[0][0]) for w in ("one", "two", "three"))
