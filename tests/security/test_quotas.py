"""Per-tenant limits at the real api on a real Postgres and broker: requests per second, turns
queued or running, model tokens per UTC day; each a 429 problem+json naming the limit with a
computed Retry-After, and another tenant unaffected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api import quotas
from eventstore import limits
from tests.services import Stack, stack_on, wait_until

pytestmark = pytest.mark.services

TOKENS = "tok-rate:rate,tok-turns:turns,tok-tokens:tokens,tok-free:free"
LIMITS = "rate:rate=1/3;turns:turns=1;tokens:tokens=1"


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server, log_dir, auth_required=True, api_tokens=TOKENS, tenant_limits=LIMITS
    ) as stack:
        await stack.start("projector")
        await stack.start_api()
        yield stack


def api(stack: Stack, token: str) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=stack.api_url or "", timeout=60, headers=headers)


def assert_429(r: httpx.Response, limit: str) -> int:
    """The answer is a 429 problem+json naming `limit`; its Retry-After in seconds."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 429 and body["limit"] == limit, body
    retry = int(r.headers["retry-after"])
    assert retry >= 1 and body["retry_after"] == retry
    return retry


async def test_requests_past_the_burst_wait_for_the_bucket(stack: Stack) -> None:
    async with api(stack, "tok-rate") as rate, api(stack, "tok-free") as free:
        answers = [await rate.get("/v1/sessions") for _ in range(4)]
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        assert assert_429(answers[3], "requests") == 1  # one request a second: back within a second
        assert "1 requests per second" in answers[3].json()["detail"]
        assert [(await free.get("/v1/sessions")).status_code for _ in range(10)] == [200] * 10


async def test_a_tenant_at_its_turn_limit_cannot_post_another(stack: Stack) -> None:
    # No reactor runs: a posted turn stays queued.
    async with api(stack, "tok-turns") as turns, api(stack, "tok-free") as free:
        first = await turns.post("/v1/sessions/q1/messages", json={"content": "one"})
        assert first.status_code == 202, first.text

        async def queued() -> bool:
            rows = await stack.sql(
                "SELECT count(*) FROM turns WHERE tenant_id = 'turns' AND status = 'queued'"
            )
            return bool(rows[0][0] == 1)

        await wait_until(queued)
        second = await turns.post("/v1/sessions/q2/messages", json={"content": "two"})
        assert_429(second, "turns")
        assert "1 turns queued or running, its limit is 1" in second.json()["detail"]
        assert await stack.sql("SELECT session_id FROM sessions WHERE session_id = 'q2'") == []
        # The same turn posted again (its Idempotency-Key) is no new turn: not refused.
        key = first.headers["idempotency-key"]
        again = await turns.post(
            "/v1/sessions/q1/messages", json={"content": "one"}, headers={"Idempotency-Key": key}
        )
        assert again.status_code in (200, 409), again.text
        other = await free.post("/v1/sessions/q3/messages", json={"content": "three"})
        assert other.status_code == 202, other.text


async def test_a_tenant_past_its_daily_tokens_waits_until_midnight(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quotas, "TOKENS_CACHE_S", 0.0)  # read the projection on every post
    await stack.start("reactor", "model")
    async with api(stack, "tok-tokens") as tokens, api(stack, "tok-free") as free:
        done = await tokens.post("/v1/sessions/k1/messages", params={"wait": 30}, json={"content": "hi"})
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text

        async def counted() -> bool:
            rows = await stack.sql("SELECT count(*) FROM model_calls WHERE tenant_id = 'tokens'")
            return bool(rows[0][0] >= 1)

        await wait_until(counted)
        refused = await tokens.post("/v1/sessions/k1/messages", json={"content": "more"})
        retry = assert_429(refused, "tokens")
        assert abs(retry - limits.seconds_to_midnight(datetime.now(UTC))) <= 5
        assert "its limit is 1" in refused.json()["detail"]
        fine = await free.post("/v1/sessions/k2/messages", params={"wait": 30}, json={"content": "hi"})
        assert fine.status_code == 200, fine.text


def test_limits_are_parsed_and_a_bad_spec_names_what_is_wrong() -> None:
    table = limits.from_settings("20/40", 4, None, "acme:rate=5,tokens=100;big:turns=0")
    assert table["*"] == limits.TenantLimits(rate=20, burst=40, turns=4)
    assert table["acme"] == limits.TenantLimits(rate=5, burst=5, turns=4, tokens=100)
    assert table["big"].turns is None and table["big"].rate == 20
    for spec, said in (
        ("acme:rate=fast", "rate='fast'"),
        ("acme:speed=1", "speed=1"),
        ("nocolon", "nocolon"),
    ):
        with pytest.raises(ValueError, match=said):
            limits.parse(spec)


def test_seconds_to_midnight_are_computed() -> None:
    assert limits.seconds_to_midnight(datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC)) == 30
    assert limits.seconds_to_midnight(datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)) == 86400
