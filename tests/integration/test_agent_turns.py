"""Agent turns through the real parts: tools, Claude through the SDK and the fake server,
the ledger, policies, retention. The model is faked at the HTTP boundary only."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlog.replay import rebuild, replay
from eventstore import events as ev
from eventstore import ids, ledger, store
from eventstore.events import Usage
from eventstore.models import CLAUDE_DEFAULT, OFFLINE_MODEL
from eventstore.state import Turn, fold
from processors import reactor
from processors.tools.registry import Echo, EffectClass, Registry, ToolContext, ToolOutput
from tests.fakes import anthropic as fake
from tests.services import Stack, create_database, published_cost, snapshot, stack_on, wait_until

MODEL = CLAUDE_DEFAULT
# A session's cost recomputed from its calls' usage and stored prices (docs/sql.md).
RECOMPUTED = (
    "sum(m.input_tokens * m.input_usd_per_mtok + m.output_tokens * m.output_usd_per_mtok"
    " + m.cache_write_tokens * m.cache_write_usd_per_mtok"
    " + m.cache_read_tokens * m.cache_read_usd_per_mtok) / 1e6"
)


class Add:
    """A test tool: adds two numbers."""

    name = "Add"
    description = "Adds a and b."
    input_schema: dict[str, Any] = {  # noqa: RUF012
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    }

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        return ToolOutput(str(tool_input["a"] + tool_input["b"]))


class Broken:
    name = "Broken"
    description = "Always raises."
    input_schema: dict[str, Any] = {"type": "object", "properties": {}}  # noqa: RUF012

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        raise RuntimeError("disk on fire")


TOOLS = Registry([Echo(), Add(), Broken()])


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server,
        log_dir,
        anthropic_base_url=claude.base_url,
        anthropic_api_key="test-key",
        default_model=OFFLINE_MODEL,  # with a key set, sessions naming no model would get Claude
        model_retry_base_s=0.05,
        expiry_check_s=0.2,
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools", tools=TOOLS)
        await stack.start_api()
        yield stack


async def _post(stack: Stack, sid: str, body: dict[str, Any], key: str, wait: float = 30) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        return await client.post(
            f"/v1/sessions/{sid}/messages",
            params={"wait": wait} if wait else None,
            json=body,
            headers={"Idempotency-Key": key},
        )


def _plain(value: Any) -> Any:
    """A request body without its cache breakpoints (they are checked on their own)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def test_offline_model_call_lines_run_tools_and_quote_their_results(stack: Stack) -> None:
    lines = 'call Echo {"text": "first line\\nsecond line"}\ncall Add {"a": 2, "b": 3}\ncall Nope {}'
    r = await _post(stack, "off", {"content": lines}, "t1")
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["status"] == "completed" and turn["steps"] == 2
    text = turn["output_text"]
    assert text.startswith("Tool results: ")
    assert ": first line;" in text and "second line" not in text
    assert ": 5;" in text
    assert "(error): unknown tool 'Nope'; the tools available are: Add, Broken, Echo" in text
    roles = await stack.sql("SELECT role FROM messages WHERE session_id = 'off' ORDER BY seq")
    assert [r[0] for r in roles] == ["user", "assistant", "user", "assistant"]
    calls = await stack.sql(
        "SELECT name, status, is_error FROM tool_calls WHERE session_id = 'off' ORDER BY name"
    )
    assert calls == [("Add", "ok", False), ("Echo", "ok", False), ("Nope", "error", True)]


async def test_a_tool_that_raises_answers_the_model_with_an_error(stack: Stack) -> None:
    r = await _post(stack, "broken", {"content": "call Broken {}"}, "t1")
    assert r.json()["status"] == "completed"
    assert "(error): Broken failed: RuntimeError: disk on fire" in r.json()["output_text"]


async def test_three_parallel_tool_calls_through_the_sdk_make_the_exact_request_sequence(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    first = fake.tool_use(
        ("Add", {"a": 1, "b": 2}),
        ("Echo", {"text": "hello"}),
        ("Add", {"a": 10, "b": 20}),
        usage={"input_tokens": 50, "output_tokens": 30, "cache_creation_input_tokens": 400},
    )
    last = fake.text(
        "3, hello and 30",
        usage={"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 400},
    )
    claude.script(first, last)
    r = await _post(
        stack,
        "sdk",
        {"content": "add and echo", "model": MODEL, "system": "Be brief.", "tools": ["Add", "Echo"]},
        "t1",
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["output_text"] == "3, hello and 30"
    one, two = claude.requests
    assert one["model"] == two["model"] == MODEL
    assert _plain(one["system"]) == [{"type": "text", "text": "Be brief."}]
    assert [t["name"] for t in _plain(one["tools"])] == ["Add", "Echo"]
    assert _plain(one["messages"]) == [
        {"role": "user", "content": [{"type": "text", "text": "add and echo"}]}
    ]
    # The second call: the assistant's blocks verbatim, then all three results in one user message.
    assistant, results = _plain(two["messages"])[1:]
    assert assistant == {"role": "assistant", "content": list(first.content)}
    ids = [b["id"] for b in first.content if b["type"] == "tool_use"]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": ids[0], "content": "3"},
            {"type": "tool_result", "tool_use_id": ids[1], "content": "hello"},
            {"type": "tool_result", "tool_use_id": ids[2], "content": "30"},
        ],
    }
    assert len(two["messages"]) == 3
    # Cache breakpoints: the last tool, the system prompt, the last message's last block.
    assert two["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert two["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert two["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    # Money: the session's cost in SQL is its calls' usage times the model's published prices.
    expected = sum(
        (
            published_cost(MODEL, Usage(**u))
            for u in (
                {"input_tokens": 50, "output_tokens": 30, "cache_creation_input_tokens": 400},
                {"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 400},
            )
        ),
        Decimal(0),
    )
    in_sql = await stack.sql(
        f"SELECT s.cost_usd, {RECOMPUTED}, sum(m.cost_usd)"
        " FROM sessions s JOIN model_calls m USING (session_id)"
        " WHERE s.session_id = 'sdk' GROUP BY s.cost_usd"
    )
    assert in_sql == [(expected, expected, expected)]
    assert expected > 0
    ledger = await stack.sql("SELECT effect_key, kind FROM effects WHERE session_id = 'sdk' ORDER BY 1")
    assert [k for _, k in ledger].count("model") == 2 and [k for _, k in ledger].count("tool") == 3
    # Invariant 8: replaying and rebuilding read the record only; nothing is called or run.
    runs = stack.workers["tools"].runs
    before = await snapshot(stack)
    for source in ("kafka", "postgres"):
        state = await replay(stack.settings, "sdk", source)
        assert [m.role for m in state.messages] == ["user", "assistant", "user", "assistant"]
    await rebuild(stack.settings)
    assert await snapshot(stack) == before
    assert claude.calls == 2 and stack.workers["tools"].runs == runs


async def test_retryable_errors_are_retried_and_a_bad_request_fails_the_turn(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.rate_limited(0.2), fake.overloaded(), fake.text("finally"))
    r = await _post(stack, "retry", {"content": "hi", "model": MODEL}, "t1")
    assert r.json()["status"] == "completed" and r.json()["output_text"] == "finally"
    assert claude.calls == 3
    assert await stack.sql("SELECT attempts FROM effects WHERE session_id = 'retry'") == [(3,)]
    claude.script(fake.invalid_request("messages.0.content: must not be empty"))
    r = await _post(stack, "retry", {"content": "again"}, "t2")
    failed = r.json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("model call failed: 400 invalid_request_error")
    assert claude.calls == 4  # a bad request is not retried


async def test_a_redelivered_request_reemits_the_recorded_outcome_and_calls_nothing(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.tool_use(("Echo", {"text": "x"})), fake.text("done"))
    r = await _post(stack, "again", {"content": "echo x", "model": MODEL}, "t1")
    assert r.json()["status"] == "completed" and r.json()["steps"] == 2
    claude_calls = claude.calls
    events = await stack.sql("SELECT count(*) FROM events WHERE session_id = 'again'")
    # Forget where the model and tool workers were: they read the whole log again as new.
    await stack.stop_role("model")
    await stack.stop_role("tools")
    await stack.sql("DELETE FROM consumer_offsets WHERE consumer IN ('model-worker', 'tool-worker')")
    await stack.start("model", "tools", tools=TOOLS)
    await wait_until(lambda: _caught_up(stack, "model"))
    await wait_until(lambda: _caught_up(stack, "tools"))
    assert claude.calls == claude_calls
    assert stack.workers["model"].performed == 0 and stack.workers["tools"].performed == 0
    assert await stack.sql("SELECT count(*) FROM events WHERE session_id = 'again'") == events


async def _caught_up(stack: Stack, role: str) -> bool:
    worker = stack.workers.get(role)
    return bool(worker is not None and worker.caught_up and not worker.tasks)


async def test_policy_reject_answers_409_and_interrupt_ends_the_running_turn(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    release = threading.Event()

    def slow(request: dict[str, Any]) -> fake.Reply:
        release.wait(20)
        return fake.text("slow answer")

    claude.default = slow
    try:
        r = await _post(stack, "rej", {"content": "first", "model": MODEL, "policy": "reject"}, "a", wait=0)
        assert r.status_code == 202
        await wait_until(lambda: _status(stack, "rej", "running"))
        refused = await _post(stack, "rej", {"content": "second"}, "b", wait=0)
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        r = await _post(
            stack, "int", {"content": "first", "model": MODEL, "policy": "interrupt"}, "a", wait=0
        )
        await wait_until(lambda: _status(stack, "int", "running"))
        await wait_until(lambda: _calls(claude, 2))
        claude.default = fake.default_reply
        newer = await _post(stack, "int", {"content": "second"}, "b")
        assert newer.json()["status"] == "completed", newer.json()
    finally:
        release.set()
    turns = await stack.sql("SELECT status, error FROM turns WHERE session_id = 'int' ORDER BY requested_at")
    assert turns[0] == ("failed", "interrupted by a newer user message (policy interrupt)")
    await wait_until(lambda: _status(stack, "rej", "idle"))
    # The interrupted call's late answer is paid for but not in the transcript.
    await wait_until(lambda: _late_answer_billed(stack))
    texts = await stack.sql(
        "SELECT content->0->>'text' FROM messages WHERE session_id = 'int' AND role = 'assistant'"
    )
    assert ("slow answer",) not in texts
    # ... and the session's cost is still every call's: the model_calls view has them all.
    costs = await stack.sql(
        "SELECT s.cost_usd, (SELECT sum(cost_usd) FROM model_calls WHERE session_id = 'int'),"
        " (SELECT count(*) FROM model_calls WHERE session_id = 'int')"
        " FROM sessions s WHERE session_id = 'int'"
    )
    assert costs[0][0] == costs[0][1] and costs[0][2] == 2


async def _late_answer_billed(stack: Stack) -> bool:
    rows = await stack.sql(
        "SELECT t.input_tokens > 0 FROM turns t WHERE session_id = 'int' AND status = 'failed'"
    )
    return bool(rows and rows[0][0])


async def _status(stack: Stack, sid: str, status: str) -> bool:
    rows = await stack.sql("SELECT status FROM sessions WHERE session_id = %s", sid)
    return bool(rows and rows[0][0] == status)


async def _calls(claude: fake.FakeAnthropic, n: int) -> bool:
    return claude.calls >= n


async def test_idle_sessions_expire_and_deleted_sessions_vanish_everywhere(stack: Stack) -> None:
    r = await _post(stack, "brief", {"content": "hi", "ttl_seconds": 1}, "a")
    assert r.json()["status"] == "completed"
    await wait_until(lambda: _status(stack, "brief", "expired"), within=15)
    assert "brief" not in stack.workers["reactor"].cache.states
    gone = await _post(stack, "brief", {"content": "still there?"}, "b")
    assert gone.status_code == 410

    r = await _post(stack, "doomed", {"content": 'call Echo {"text": "secret"}'}, "a")
    assert r.json()["status"] == "completed"
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        assert (await client.delete("/v1/sessions/doomed")).status_code == 202

        async def vanished() -> bool:
            return (await client.get("/v1/sessions/doomed")).status_code == 404

        await wait_until(vanished)
        assert (await client.delete("/v1/sessions/nobody")).status_code == 404
    for table in ("events", "sessions", "turns", "messages", "tool_calls", "effects"):
        assert await stack.sql(f"SELECT count(*) FROM {table} WHERE session_id = 'doomed'") == [(0,)], table
    again = await _post(stack, "doomed", {"content": "hello?"}, "b")
    assert again.status_code == 404
    for role in ("reactor", "model", "tools"):
        await wait_until(lambda role=role: _dropped(stack, role, "doomed"))


async def _dropped(stack: Stack, role: str, sid: str) -> bool:
    cache = stack.workers[role].cache
    return sid not in cache.states and sid in cache.closed


async def test_model_calls_of_many_sessions_are_in_flight_at_once(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    lock = threading.Lock()
    now = [0, 0]  # in flight, most in flight

    sessions = 40
    crowd = threading.Condition(lock)

    def slow(request: dict[str, Any]) -> fake.Reply:
        # Each call waits (up to 5 s) until half the sessions' calls are in flight at once,
        # so the check does not depend on how fast the posts arrive.
        with crowd:
            now[0] += 1
            now[1] = max(now[1], now[0])
            crowd.notify_all()
            crowd.wait_for(lambda: now[1] >= sessions // 2, timeout=5)
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        return fake.text("ok")

    claude.default = slow
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        for i in range(sessions):
            r = await client.post(f"/v1/sessions/many{i}/messages", json={"content": "go", "model": MODEL})
            assert r.status_code == 202

    async def all_done() -> bool:
        rows = await stack.sql("SELECT count(*) FROM turns WHERE status = 'completed'")
        return bool(rows[0][0] == sessions)

    await wait_until(all_done, within=60)
    # Not a timing assertion: the server saw most of the calls at the same moment.
    assert now[1] >= sessions // 2, now


async def test_the_ledger_refuses_outcomes_of_a_deleted_session(pg_server: str) -> None:
    url = create_database(pg_server)
    await store.migrate(url)
    request = reactor.model_request(
        fold("gone", [ev.session_started("gone", model="m")]),
        Turn(turn_id="t1", status="running", user_content=()),
        1,
        ev.now(),
    )
    outcome = ev.TurnFailed(
        event_id=ids.derive("x"),
        session_id="gone",
        occurred_at=ev.now(),
        payload=ev.TurnFailedPayload(reason="r"),
    )
    async with await store.connect(url) as conn:
        key = ledger.model_key("gone", request.turn_id, 1)
        assert await ledger.record(conn, key, "model", request, outcome) == outcome
        assert await ledger.record(conn, key, "model", request, outcome) == outcome  # the recorded one
        await store.project_event(
            conn,
            ev.SessionDeleted(event_id=ids.derive("d"), session_id="gone", occurred_at=ev.now()),
            "e",
            0,
            0,
        )
        assert await ledger.recorded(conn, key) is None
        assert await ledger.record(conn, key, "model", request, outcome) is None
        assert await ledger.recorded(conn, key) is None
