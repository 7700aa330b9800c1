"""Every setting the api accepts can be recorded and projected: a value past what the
projection's columns (or jsonb) hold is a 422 naming the field, never a 201 for a session whose
first event the projector then dead-letters (the session running with settings no one can read)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Stack, stack_on

INT4_MAX = 2**31 - 1  # sessions.ttl_s
INT8_MAX = 2**63 - 1  # sessions.token_budget


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start_api()
        yield stack


def client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api_url or "", timeout=60)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sessions", {"session_id": "ttl", "ttl_seconds": INT4_MAX + 1}, "ttl_seconds"),
        ("/v1/sessions", {"session_id": "budget", "token_budget": INT8_MAX + 1}, "token_budget"),
        ("/v1/sessions/by-message/messages", {"content": "hi", "ttl_seconds": 10**12}, "ttl_seconds"),
        # Python's JSON parser reads these as inf and nan; jsonb has neither.
        ("/v1/sessions", '{"session_id": "huge", "metadata": {"x": 1e400}}', "metadata"),
        ("/v1/sessions", '{"session_id": "nan", "metadata": {"x": [NaN]}}', "metadata"),
        (
            "/v1/sessions/by-block/messages",
            '{"content": [{"type": "text", "text": "a", "n": -1e999}]}',
            "content",
        ),
    ],
)
async def test_a_value_the_projection_cannot_hold_is_refused_naming_its_field(
    stack: Stack, path: str, body: dict[str, Any] | str, field: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    async with client(stack) as api:
        r = await api.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in {e["field"] for e in r.json()["errors"]}, r.json()
    assert await stack.sql("SELECT consumer, reason FROM dead_letters") == []


async def test_the_widest_settings_accepted_are_projected_and_run(stack: Stack) -> None:
    settings = {
        "ttl_seconds": INT4_MAX,
        "token_budget": INT8_MAX,
        "max_steps": 1000,
        "max_tokens": 128_000,
        "metadata": {"big": 10**30, "float": 1.7e308, "deep": [[{"x": None}]]},
    }
    async with client(stack) as api:
        made = await api.post("/v1/sessions", json={"session_id": "widest", **settings})
        assert made.status_code == 201, made.text
        done = await api.post("/v1/sessions/widest/messages", params={"wait": 30}, json={"content": "hi"})
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text
    row = await stack.sql(
        "SELECT ttl_s, token_budget, max_steps, metadata FROM sessions WHERE session_id = %s", "widest"
    )
    assert row[0][:3] == (INT4_MAX, INT8_MAX, 1000)
    metadata = row[0][3]
    assert (
        metadata["big"] == 10**30
        and float(metadata["float"]) == 1.7e308
        and metadata["deep"] == [[{"x": None}]]
    )
    assert await stack.sql("SELECT consumer, reason FROM dead_letters") == []


async def test_a_parent_that_is_no_session_id_is_refused_as_invalid(stack: Stack) -> None:
    # Not looked up (and waited for, in case the projection lags): no session has such an id.
    async with client(stack) as api:
        for parent in ("", "not a session/id"):
            r = await api.post("/v1/subagent/run", json={"prompt": "hi", "parent_session_id": parent})
            assert r.status_code == 422, r.text
            assert [e["field"] for e in r.json()["errors"]] == ["parent_session_id"], r.json()
        # Well formed, but no session: neither projected nor in the ledger (as a Task call's
        # parent would be while the projection catches up), so unknown.
        r = await api.post("/v1/subagent/run", json={"prompt": "hi", "parent_session_id": "nobody"})
        assert r.status_code == 422 and r.json()["field"] == "parent_session_id", r.text
