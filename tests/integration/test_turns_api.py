"""A turn through the real parts: HTTP -> Kafka -> reactor -> model worker -> Postgres -> HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.services import Stack, stack_on, wait_until


@pytest.fixture
async def running(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start_api()
        yield stack


async def test_posted_message_is_answered_in_api_and_sql(running: Stack) -> None:
    async with httpx.AsyncClient(base_url=running.api_url or "") as client:
        r = await client.post(
            "/v1/sessions/alpha/messages",
            params={"wait": 20},
            json={"content": "What is agentlog?"},
            headers={"Idempotency-Key": "t1"},
        )
        assert r.status_code == 200, r.text
        turn = r.json()
        assert turn["status"] == "completed"
        assert "What is agentlog?" in turn["output_text"]
        session = (await client.get("/v1/sessions/alpha")).json()
    assert [m["role"] for m in session["messages"]] == ["user", "assistant"]
    meta = session["metadata"]
    assert meta["turn_count"] == 1
    assert meta["total_tokens"]["input"] > 0 and meta["total_tokens"]["output"] > 0
    assert float(meta["session_cost"]) > 0
    rows = await running.sql(
        "SELECT role, content->0->>'text' FROM messages WHERE session_id = 'alpha' ORDER BY seq"
    )
    assert rows[0] == ("user", "What is agentlog?")
    assert rows[1][0] == "assistant" and rows[1][1] == turn["output_text"]


async def test_same_idempotency_key_is_one_turn(running: Stack) -> None:
    async with httpx.AsyncClient(base_url=running.api_url or "") as client:
        body = {"content": "only once"}
        first = await client.post("/v1/sessions/beta/messages", json=body, headers={"Idempotency-Key": "k"})
        second = await client.post("/v1/sessions/beta/messages", json=body, headers={"Idempotency-Key": "k"})
        # The second finds the first not yet projected (202, the same turn), projected and
        # still in flight (409, the draft's "request in progress"), or finished (200).
        assert first.status_code == 202 and second.status_code in (200, 202, 409), second.text
        assert first.headers["Location"].endswith(first.json()["turn_id"])
        assert second.headers["Location"] == first.headers["Location"]
        if second.status_code == 409:
            assert second.headers["Retry-After"] == "1"
        else:
            assert first.json()["turn_id"] == second.json()["turn_id"]

        async def done() -> bool:
            r = await client.get(f"/v1/sessions/beta/turns/{first.json()['turn_id']}")
            return r.status_code == 200 and r.json()["status"] == "completed"

        await wait_until(done)
        third = await client.post(
            "/v1/sessions/beta/messages", params={"wait": 5}, json=body, headers={"Idempotency-Key": "k"}
        )
        assert third.status_code == 200 and third.json()["turn_id"] == first.json()["turn_id"]
        other = await client.post(
            "/v1/sessions/beta/messages", json={"content": "another body"}, headers={"Idempotency-Key": "k"}
        )
        assert other.status_code == 422
        assert other.headers["content-type"].startswith("application/problem+json")
        assert other.json()["field"] == "Idempotency-Key"
    assert await running.sql("SELECT count(*) FROM turns WHERE session_id = 'beta'") == [(1,)]
    assert await running.sql(
        "SELECT count(*) FROM events WHERE session_id = 'beta' AND type = 'user_message'"
    ) == [(1,)]
    assert await running.sql("SELECT turn_count FROM sessions WHERE session_id = 'beta'") == [(1,)]


async def test_second_turn_sees_the_history_and_events_page(running: Stack) -> None:
    async with httpx.AsyncClient(base_url=running.api_url or "") as client:
        for i, text in enumerate(["one", "two"]):
            r = await client.post(
                "/v1/sessions/gamma/messages",
                params={"wait": 20},
                json={"content": text},
                headers={"Idempotency-Key": f"g{i}"},
            )
            assert r.status_code == 200, r.text
        assert "turn 2 of our conversation" in r.json()["output_text"]
        page = (await client.get("/v1/sessions/gamma/events", params={"limit": 3})).json()
        assert page["has_more"] and page["first_id"] == 1 and page["last_id"] == 3
        rest = (await client.get("/v1/sessions/gamma/events", params={"after": 3, "limit": 100})).json()
        assert rest["first_id"] == 4 and not rest["has_more"]
        types = [e["type"] for e in page["data"] + rest["data"]]
        assert types.count("turn_completed") == 2 and types[0] == "session_started"


async def test_bad_input_is_problem_json_naming_the_field(running: Stack) -> None:
    async with httpx.AsyncClient(base_url=running.api_url or "") as client:
        r = await client.post("/v1/sessions/delta/messages", json={"content": ""})
        assert r.status_code == 422
        problem = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == 422 and problem["errors"][0]["field"] == "content"
        r = await client.post("/v1/sessions/delta/messages", json={"text": "x"})
        assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} >= {"content", "text"}
        r = await client.post("/v1/sessions/delta/messages", params={"wait": -1}, json={"content": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "wait"
        # A block the Messages API would refuse never enters the transcript.
        blocks = [
            {"type": "text", "text": "fine"},
            {"type": "tool_result", "tool_use_id": "x", "content": "y"},
        ]
        r = await client.post("/v1/sessions/delta/messages", json={"content": blocks})
        assert r.status_code == 422
        error = r.json()["errors"][0]
        assert (
            error["field"] == "content" and "block 1: type 'tool_result' is not accepted" in error["message"]
        )
        r = await client.post("/v1/sessions/delta/messages", json={"content": [{"type": "image"}]})
        assert r.status_code == 422 and "'source' object" in r.json()["errors"][0]["message"]
        r = await client.post("/v1/sessions/delta/messages", json={"content": "x", "policy": "sometimes"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "policy"
        r = await client.get("/v1/sessions/nobody")
        assert r.status_code == 404 and r.json()["title"] == "Session not found"
        r = await client.get("/v1/sessions/nobody/events")
        assert r.status_code == 404
        r = await client.post(
            "/v1/sessions/delta/messages", content=b"{", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        big = "x" * (running.settings.max_body_bytes + 1)
        r = await client.post("/v1/sessions/delta/messages", json={"content": big})
        assert r.status_code == 413
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
