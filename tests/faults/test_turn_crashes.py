"""SIGKILL of the model worker or the reactor at every named failpoint of a tool-using turn.

After a restart: the turn completes, every step has one assistant message, the ledger has
one outcome per key, every copy of an event in the log carries the same payload (a
re-emitted outcome is the recorded one, never a second call's), and the model server saw
no more calls than the kill point allows.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentlog.replay import events_from_kafka
from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import CLAUDE_DEFAULT
from tests.fakes import anthropic as fake
from tests.faults.test_kill import kill_then_recover
from tests.services import Stack, stack_on

MODEL = CLAUDE_DEFAULT
SESSIONS = 3


def _answer(request: dict[str, Any]) -> fake.Reply:
    """Ask for a tool first; once its result is in, answer."""
    last = request["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return fake.text("done")
    return fake.tool_use(("Echo", {"text": "ping"}))


@pytest.fixture
def claude() -> Iterator[fake.FakeAnthropic]:
    with fake.FakeAnthropic() as server:
        server.default = _answer
        yield server


async def _post_turns(stack: Stack) -> None:
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    at = datetime.now(UTC)
    for i in range(SESSIONS):
        await kafka.append_many(
            [
                ev.session_started(f"c{i}", model=MODEL, at=at),
                ev.user_message(f"c{i}", text="echo ping", idempotency_key="a", at=at),
            ]
        )
    await kafka.stop()


async def _completed(stack: Stack) -> bool:
    rows = await stack.sql("SELECT count(*) FROM turns WHERE status = 'completed'")
    return bool(rows[0][0] == SESSIONS)


async def _check(stack: Stack, claude: fake.FakeAnthropic, extra_calls: int) -> None:
    """The turns completed once each; `extra_calls`: model calls the kill point may repeat."""
    assert await stack.sql("SELECT DISTINCT status, steps FROM turns") == [("completed", 2)]
    per_step = await stack.sql(
        "SELECT turn_id, count(*) FROM messages WHERE role = 'assistant' GROUP BY turn_id"
    )
    assert sorted(n for _, n in per_step) == [2] * SESSIONS
    ledger = await stack.sql("SELECT kind, count(*) FROM effects GROUP BY kind ORDER BY kind")
    assert ledger == [("model", 2 * SESSIONS), ("tool", SESSIONS)]
    # Every copy of an event in the log is the same event: outcomes are never recorded twice.
    for i in range(SESSIONS):
        copies: dict[Any, set[str]] = defaultdict(set)
        for event in await events_from_kafka(stack.settings, f"c{i}"):
            body = event.payload.model_dump(mode="json")
            copies[event.event_id].add(json.dumps(body, sort_keys=True))
        assert all(len(bodies) == 1 for bodies in copies.values())
    assert claude.calls == 2 * SESSIONS + extra_calls


def _env(claude: fake.FakeAnthropic) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": claude.base_url, "ANTHROPIC_API_KEY": "test-key"}


# (failpoint, how many model calls beyond the minimum the kill may cost)
MODEL_POINTS = [
    ("model-worker.after_consume", 0),
    ("model-worker.before_call", 0),
    ("model-worker.after_call", 1),  # the call happened, its outcome was never recorded
    ("model-worker.after_ledger", 0),  # recorded: the restart re-emits it, calls nothing
    ("model-worker.after_append", 0),
]


@pytest.mark.parametrize(("point", "extra"), MODEL_POINTS)
async def test_model_worker_killed_at(
    point: str, extra: int, pg_server: str, log_dir: Path, claude: fake.FakeAnthropic
) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "tools")
        await _post_turns(stack)
        # One call at a time in the doomed worker, so the kill point alone says which calls ran.
        serial = {**_env(claude), "AGENTLOG_MODEL_CONCURRENCY": "1"}
        await kill_then_recover(
            "model", stack.settings, log_dir, f"{point}=kill", lambda: _completed(stack), serial, _env(claude)
        )
        await _check(stack, claude, extra)


REACTOR_POINTS = ["reactor.after_consume", "reactor.before_append", "reactor.after_append"]


@pytest.mark.parametrize("point", REACTOR_POINTS)
async def test_reactor_killed_at(
    point: str, pg_server: str, log_dir: Path, claude: fake.FakeAnthropic
) -> None:
    overrides = {"anthropic_base_url": claude.base_url, "anthropic_api_key": "test-key"}
    async with stack_on(pg_server, log_dir, partitions=2, **overrides) as stack:
        await stack.start("projector", "model", "tools")
        await _post_turns(stack)
        # The third hit: by then the reactor has asked for a model call and a tool.
        await kill_then_recover(
            "reactor", stack.settings, log_dir, f"{point}=kill@3", lambda: _completed(stack)
        )
        await _check(stack, claude, 0)


def test_every_failpoint_named_here_exists_in_the_code() -> None:
    root = Path(__file__).resolve().parents[2]
    code = "".join(p.read_text() for p in (root / "processors").rglob("*.py"))
    for point, _ in MODEL_POINTS:
        assert point.split(".", 1)[1] in code, point
    for point in REACTOR_POINTS:
        assert f'"{point}"' in code, point
    assert os.environ.get("AGENTLOG_FAILPOINTS", "") == ""
