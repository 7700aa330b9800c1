"""Cost that is true or visibly unknown, and the model a session gets when it names none:
through the api, the workers and the real SDK against the fake Messages API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore.events import Usage
from eventstore.models import CLAUDE_DEFAULT
from tests.fakes import anthropic as fake
from tests.services import Stack, published_cost, stack_on

UNPRICED = "claude-no-price-list-knows-this-1"  # a name no price source knows
HOUSE = "house-model-7"  # priced by AGENTLOG_PRICES only
USAGE = {"input_tokens": 1200, "output_tokens": 300, "cache_creation_input_tokens": 800}


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server,
        log_dir,
        anthropic_base_url=claude.base_url,
        anthropic_api_key="test-key",
        prices={HOUSE: (Decimal(2), Decimal(8), Decimal("2.5"), Decimal("0.2"))},
    ) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start_api()
        yield stack


async def _turn(stack: Stack, sid: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as client:
        r = await client.post(f"/v1/sessions/{sid}/messages", params={"wait": 30}, json=body)
        assert r.status_code == 200, r.text
        turn: dict[str, Any] = r.json()
        session = await client.get(f"/v1/sessions/{sid}")
        turn["session"] = session.json()["metadata"]
        return turn


async def test_a_session_naming_no_model_runs_on_claude_at_its_published_price(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.text("priced", usage=USAGE))
    turn = await _turn(stack, "default-model", {"content": "hello"})
    assert [r["model"] for r in claude.requests] == [CLAUDE_DEFAULT]
    assert turn["session"]["model"] == CLAUDE_DEFAULT
    expected = published_cost(CLAUDE_DEFAULT, Usage(**USAGE))
    assert expected > 0
    assert Decimal(turn["cost"]) == expected and Decimal(turn["session"]["session_cost"]) == expected
    rows = await stack.sql(
        "SELECT s.cost_usd, m.cost_usd, m.price_model, m.price_source,"
        " (m.input_tokens * m.input_usd_per_mtok + m.output_tokens * m.output_usd_per_mtok"
        " + m.cache_write_tokens * m.cache_write_usd_per_mtok"
        " + m.cache_read_tokens * m.cache_read_usd_per_mtok) / 1e6"
        " FROM sessions s JOIN model_calls m USING (session_id) WHERE session_id = 'default-model'"
    )
    assert len(rows) == 1
    session_cost, call_cost, price_model, source, recomputed = rows[0]
    assert session_cost == call_cost == recomputed == expected
    assert price_model == CLAUDE_DEFAULT and source.startswith("genai-prices ")


async def test_a_model_no_price_source_knows_costs_null_not_zero(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.text("free?", usage=USAGE), fake.text("still unknown", usage=USAGE))
    first = await _turn(stack, "unpriced", {"content": "hello", "model": UNPRICED})
    assert first["status"] == "completed"
    assert first["cost"] is None and first["session"]["session_cost"] is None
    # Tokens are still counted; the cost stays unknown on the next turn too.
    assert first["usage"]["input"] == 1200
    second = await _turn(stack, "unpriced", {"content": "again"})
    assert second["cost"] is None and second["session"]["session_cost"] is None
    rows = await stack.sql(
        "SELECT (SELECT cost_usd FROM sessions WHERE session_id = 'unpriced'),"
        " (SELECT count(*) FROM turns WHERE session_id = 'unpriced' AND cost_usd IS NULL),"
        " (SELECT count(*) FROM model_calls WHERE session_id = 'unpriced' AND cost_usd IS NULL"
        "  AND price_model IS NULL)"
    )
    assert rows == [(None, 2, 2)]
    assert stack.workers["model"].metrics.unpriced._value.get() == 2


async def test_agentlog_prices_add_a_model_and_the_price_is_stored_with_the_call(
    stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.text("house", usage=USAGE))
    turn = await _turn(stack, "house", {"content": "hello", "model": HOUSE})
    # 1200 × 2 + 300 × 8 + 800 × 2.5 per million.
    assert Decimal(turn["cost"]) == Decimal("0.0068")
    rows = await stack.sql(
        "SELECT price_model, price_source, input_usd_per_mtok, output_usd_per_mtok,"
        " cache_write_usd_per_mtok, cache_read_usd_per_mtok FROM model_calls WHERE session_id = 'house'"
    )
    assert rows == [(HOUSE, "AGENTLOG_PRICES", Decimal(2), Decimal(8), Decimal("2.5"), Decimal("0.2"))]
