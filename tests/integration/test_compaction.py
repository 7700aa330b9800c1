"""A session longer than its context window, through the real parts (broker, Postgres, the
`anthropic` SDK against the fake server): it keeps answering, compacting as it goes, every
request fits the window, and the compaction is an event in the log and in SQL that replay
folds alike; the summary call is made once, however often its request is delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlog.replay import events_from_kafka, replay
from eventstore import context
from eventstore import events as ev
from eventstore.models import CLAUDE_DEFAULT
from eventstore.state import SessionState, fold
from processors.tools.registry import Echo, Registry
from tests.fakes import anthropic as fake
from tests.services import Stack, stack_on, wait_until

WINDOW = 3000
MAX_TOKENS = 300
TURNS = 6
TOOLS = Registry([Echo()])


def system_text(request: dict[str, Any]) -> str:
    system = request.get("system") or ""
    return system if isinstance(system, str) else "".join(b.get("text", "") for b in system)


def is_summary(request: dict[str, Any]) -> bool:
    return system_text(request) == context.SUMMARY_SYSTEM


def model(request: dict[str, Any]) -> fake.Reply:
    """A model with the API's window: a request over it stops at once, as the API does."""
    if fake.estimate_tokens(request) + request["max_tokens"] > WINDOW:
        return fake.stop("model_context_window_exceeded")
    if is_summary(request):
        return fake.text("The user asked for long echoes, one a turn; each was echoed.")
    last = request["messages"][-1]["content"]
    if any(b.get("type") == "tool_result" for b in last):
        return fake.text("Echoed.")
    said = "".join(b.get("text", "") for b in last if b.get("type") == "text")
    return fake.tool_use(("Echo", {"text": f"{said}: " + "echo " * 240}))


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    claude.default = model
    async with stack_on(
        pg_server, log_dir, anthropic_base_url=claude.base_url, anthropic_api_key="test-key"
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools", tools=TOOLS)
        await stack.start_api()
        yield stack


async def _turn(stack: Stack, n: int) -> dict[str, Any]:
    body = {
        "content": f"turn {n}",
        "model": CLAUDE_DEFAULT,
        "tools": ["Echo"],
        "context_window": WINDOW,
        "max_tokens": MAX_TOKENS,
    }
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post(
            "/v1/sessions/long/messages", params={"wait": 30}, json=body, headers={"Idempotency-Key": f"t{n}"}
        )
    assert r.status_code == 200, r.text
    turn: dict[str, Any] = r.json()
    return turn


async def _started(stack: Stack, session_id: str) -> SessionState | None:
    state = await replay(stack.settings, session_id, "postgres")
    return state if state.status != "new" else None


async def _caught_up(stack: Stack) -> bool:
    worker = stack.workers.get("model")
    return bool(worker is not None and worker.caught_up and not worker.tasks)


async def test_a_session_past_its_window_keeps_answering_compacted_and_replays_alike(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    turns = [await _turn(stack, n) for n in range(TURNS)]
    assert [(t["status"], t["output_text"]) for t in turns] == [("completed", "Echoed.")] * TURNS
    # Every request the model was sent fits the window; none stopped for want of room.
    assert all(fake.estimate_tokens(r) + r["max_tokens"] <= WINDOW for r in claude.requests)
    summaries = [r for r in claude.requests if is_summary(r)]
    assert summaries and claude.calls == 2 * TURNS + len(summaries)
    # The compaction is an event in the log, and in SQL, and replay folds the same state.
    logged = await replay(stack.settings, "long", "kafka")
    stored = await replay(stack.settings, "long", "postgres")
    assert logged.public() == stored.public()
    assert logged.compacted_through > 0 and logged.summary is not None
    assert logged.summary.startswith("The user asked for long echoes")
    sql = await stack.sql(
        "SELECT messages_summarised, summary, tokens_before, tokens_after FROM compactions"
        " WHERE session_id = 'long' ORDER BY occurred_at"
    )
    assert (
        sql and sql[-1][0] == logged.compacted_through and all(after < before for _, _, before, after in sql)
    )
    called = [row for row in sql if row[1] is not None]
    # The full history stays: every message is a row; the summary calls are model calls, paid for.
    assert await stack.sql("SELECT count(*) FROM messages WHERE session_id = 'long'") == [(4 * TURNS,)]
    assert await stack.sql("SELECT context_window FROM sessions WHERE session_id = 'long'") == [(WINDOW,)]
    assert await stack.sql(
        "SELECT count(*) FROM model_calls WHERE session_id = 'long' AND kind = 'compaction'"
    ) == [(len(summaries),)]
    assert len(called) >= len(summaries)
    cost = await stack.sql(
        "SELECT s.cost_usd = sum(m.cost_usd) FROM sessions s JOIN model_calls m USING (session_id)"
        " WHERE s.session_id = 'long' GROUP BY s.cost_usd"
    )
    assert cost == [(True,)]
    # A fork starts from what the model saw: the summary, then the messages it did not replace.
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post("/v1/sessions/long/fork", json={"session_id": "long-fork"})
    assert r.status_code == 201, r.text
    forked = await wait_until(lambda: _started(stack, "long-fork"))
    assert [m.as_api() for m in forked.messages] == context.view(logged)
    assert forked.config.context_window == WINDOW and forked.compacted_through == 0
    # Redelivered from the start, nothing is called again.
    calls = claude.calls
    assert await stack.sql("SELECT count(*) FROM effects WHERE effect_key LIKE 'compaction/long/%'") == [
        (len(sql),)
    ]
    await stack.stop_role("model")
    await stack.sql("DELETE FROM consumer_offsets WHERE consumer = 'model-worker'")
    await stack.start("model", tools=TOOLS)
    await wait_until(lambda: _caught_up(stack))
    assert claude.calls == calls and stack.workers["model"].performed == 0
    # A compaction request delivered again while its session still waits for it (a crash
    # between the ledger and the append): the recorded compaction is appended, nothing called.
    log = await events_from_kafka(stack.settings, "long")
    asked = next(e for e in log if isinstance(e, ev.CompactionRequested))
    waiting = fold("long", log[: log.index(asked) + 1])
    assert waiting.compacting(asked.turn_id)
    worker = stack.workers["model"]
    await worker._effect(asked, worker.key(asked), waiting)
    assert worker.reemitted == 1 and claude.calls == calls
    again = await events_from_kafka(stack.settings, "long")
    made = [e for e in again if isinstance(e, ev.ContextCompacted)]
    assert len(made) == len(sql) + 1 and made[-1] == next(
        e for e in made if e.step == asked.step and e.turn_id == asked.turn_id
    )
    assert fold("long", again).public() == logged.public()
