"""The v1 api as producers use it: tenants by bearer token, sessions (create, list, fork),
Idempotency-Key semantics, live events over SSE, stateless runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Stack, stack_on, wait_until

TOKENS = {"A": "tok-tenant-a", "B": "tok-tenant-b"}


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    tokens = ",".join(f"{token}:{tenant}" for tenant, token in TOKENS.items())
    async with stack_on(
        pg_server,
        log_dir,
        auth_required=True,
        api_tokens=tokens,
        offline_model_latency_ms=300,
        agent_run_ttl_s=1,
        expiry_check_s=0.2,
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


def client(stack: Stack, tenant: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKENS[tenant]}"} if tenant else {}
    return httpx.AsyncClient(base_url=stack.api_url or "", headers=headers, timeout=60)


async def test_tokens_map_to_tenants_and_tenants_never_see_each_other(stack: Stack) -> None:
    async with client(stack, None) as anon, client(stack, "A") as a, client(stack, "B") as b:
        r = await anon.get("/v1/sessions")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"].startswith("application/problem+json")
        bad = await anon.get("/v1/sessions", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        made = await a.post("/v1/sessions", json={"session_id": "a-secret", "system": "be brief"})
        assert made.status_code == 201 and made.json()["id"] == "a-secret"
        done = await a.post("/v1/sessions/a-secret/messages", params={"wait": 30}, json={"content": "hello"})
        assert done.json()["status"] == "completed"
        for path in (
            "/v1/sessions/a-secret",
            "/v1/sessions/a-secret/events",
            f"/v1/sessions/a-secret/turns/{done.json()['turn_id']}",
            "/v1/sessions/a-secret/approvals",
        ):
            assert (await b.get(path)).status_code == 404, path
            assert (await a.get(path)).status_code == 200, path
        assert (await b.delete("/v1/sessions/a-secret")).status_code == 404
        assert (await b.post("/v1/sessions/a-secret/fork", json={})).status_code == 404
        assert (await b.get("/v1/sessions/a-secret/events/stream")).status_code == 404
        assert [s["id"] for s in (await b.get("/v1/sessions")).json()["data"]] == []
        # The same id in B is B's own session (ids are per tenant): nothing reaches A's transcript.
        mine = await b.post(
            "/v1/sessions/a-secret/messages", params={"wait": 30}, json={"content": "let me in"}
        )
        assert mine.status_code == 200 and mine.json()["session_id"] == "a-secret"
        assert [s["id"] for s in (await b.get("/v1/sessions")).json()["data"]] == ["a-secret"]
        assert [s["id"] for s in (await a.get("/v1/sessions")).json()["data"]] == ["a-secret"]
        said = [
            m["content"]
            for m in (await a.get("/v1/sessions/a-secret")).json()["messages"]
            if m["role"] == "user"
        ]
        assert said == [[{"type": "text", "text": "hello"}]]
        taken = await b.post("/v1/sessions", json={"session_id": "a-secret"})
        assert taken.status_code == 409


async def test_sessions_are_listed_by_keyset_pages_with_filters(stack: Stack) -> None:
    async with client(stack, "A") as a:
        for i in range(5):
            assert (await a.post("/v1/sessions", json={"session_id": f"p{i}"})).status_code == 201
        seen: list[str] = []
        after = None
        while True:
            page = (
                await a.get("/v1/sessions", params={"limit": 2, **({"after": after} if after else {})})
            ).json()
            seen += [s["id"] for s in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == [f"p{i}" for i in range(5)]
        idle = (await a.get("/v1/sessions", params={"status": "idle"})).json()["data"]
        assert len(idle) == 5
        assert (await a.get("/v1/sessions", params={"status": "bogus"})).status_code == 422


async def test_idempotency_key_stored_answer_in_flight_and_reuse(stack: Stack) -> None:
    async with client(stack, "A") as a:
        body = {"content": "once"}
        first = await a.post("/v1/sessions/idem/messages", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 202

        async def projected() -> bool:
            return (await a.get(f"/v1/sessions/idem/turns/{first.json()['turn_id']}")).status_code == 200

        await wait_until(projected)
        busy = await a.post("/v1/sessions/idem/messages", json=body, headers={"Idempotency-Key": "k1"})
        assert busy.status_code in (409, 200)  # 409 while the turn runs (the model takes 300 ms)
        if busy.status_code == 409:
            assert busy.headers["retry-after"] == "1"

        async def finished() -> bool:
            r = await a.post("/v1/sessions/idem/messages", json=body, headers={"Idempotency-Key": "k1"})
            return r.status_code == 200 and r.json()["status"] == "completed"

        await wait_until(finished)
        again = await a.post("/v1/sessions/idem/messages", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["turn_id"] == first.json()["turn_id"]
        other = await a.post(
            "/v1/sessions/idem/messages", json={"content": "twice"}, headers={"Idempotency-Key": "k1"}
        )
        assert other.status_code == 422
        turns = await stack.sql("SELECT count(*) FROM turns WHERE session_id = 'A~idem'")
        assert turns == [(1,)]


async def test_fork_copies_the_history_without_a_model_call(stack: Stack) -> None:
    async with client(stack, "A") as a:
        for i, text in enumerate(["first", "second", "third"]):
            r = await a.post("/v1/sessions/src/messages", params={"wait": 30}, json={"content": text})
            assert r.json()["status"] == "completed", i
        events = (await a.get("/v1/sessions/src/events", params={"limit": 1000})).json()["data"]
        second_done = [e["seq"] for e in events if e["type"] == "turn_completed"][1]
        calls = await stack.sql("SELECT count(*) FROM model_calls")
        forked = await a.post(
            "/v1/sessions/src/fork", json={"at_seq": second_done + 1, "session_id": "fork1"}
        )
        assert forked.status_code == 201, forked.text
        view = forked.json()
        assert [m["role"] for m in view["messages"]] == ["user", "assistant"] * 2
        assert view["messages"][2]["content"][0]["text"] == "second"
        assert await stack.sql("SELECT count(*) FROM model_calls") == calls  # no model call
        # The fork goes on on its own: its next turn sees the copied history.
        r = await a.post("/v1/sessions/fork1/messages", params={"wait": 30}, json={"content": "fourth?"})
        assert "turn 3 of our conversation" in r.json()["output_text"]
        source = (await a.get("/v1/sessions/src")).json()
        assert len(source["messages"]) == 6  # unchanged


async def _sse(
    stack: Stack, path: str, stop: Any, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read server-sent events until `stop(events)` is true."""
    events: list[dict[str, Any]] = []
    async with client(stack, "A") as a, a.stream("GET", path, headers=headers or {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                current["id"] = int(line[3:].strip())
            elif line.startswith("event:"):
                current["event"] = line[6:].strip()
            elif line.startswith("data:"):
                current["data"] = json.loads(line[5:].strip())
            elif line == "" and current:
                events.append(current)
                current = {}
                if stop(events):
                    break
    return events


async def test_live_events_stream_with_text_deltas_and_resume_without_gaps(stack: Stack) -> None:
    async with client(stack, "A") as a:
        await a.post("/v1/sessions", json={"session_id": "live"})

        def turn_done(events: list[dict[str, Any]]) -> bool:
            return any(e.get("event") == "turn_completed" for e in events)

        reader = asyncio.create_task(_sse(stack, "/v1/sessions/live/events/stream", turn_done))
        await asyncio.sleep(0.5)
        await a.post("/v1/sessions/live/messages", json={"content": "stream this reply to me please"})
        events = await asyncio.wait_for(reader, 30)
    stored = [e for e in events if "id" in e]
    assert [e["id"] for e in stored] == list(range(1, len(stored) + 1))
    assert [e["event"] for e in stored][:2] == ["session_started", "user_message"]
    deltas = [e["data"]["text"] for e in events if e.get("event") == "text_delta"]
    # In pieces, or one when the model streams faster than a notification goes (test_deltas.py).
    assert deltas and "stream this reply" in "".join(deltas)
    # Resuming after event 3 gives 4.. exactly once.
    resumed = await _sse(stack, "/v1/sessions/live/events/stream", turn_done, headers={"Last-Event-ID": "3"})
    assert [e["id"] for e in resumed if "id" in e] == [e["id"] for e in stored if e["id"] > 3]


async def test_a_stateless_run_answers_and_keeps_nothing(stack: Stack) -> None:
    async with client(stack, "A") as a:
        r = await a.post("/v1/agent/run", json={"prompt": "just this once", "timeout_s": 30})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["status"] == "completed" and "just this once" in answer["output_text"]
        sid = answer["session_id"]

        async def gone() -> bool:
            return (await a.get(f"/v1/sessions/{sid}")).status_code == 404

        await wait_until(gone, within=20)
        assert await stack.sql("SELECT count(*) FROM events WHERE session_id = %s", f"A~{sid}") == [(0,)]
        slow = await a.post("/v1/agent/run", json={"prompt": "hurry", "timeout_s": 0.05})
        assert slow.status_code == 504 and slow.json()["session_id"].startswith("run-")
