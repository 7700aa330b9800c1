"""The refund tools tested with agentlog's testing kit: whole turns through the real embedded
stack (Postgres, a broker, the workers, the api), the model offline or faked at HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from refunds import tools
from refunds.payments import Payments, payments

from agentlog.fake_anthropic import FakeAnthropic, text, tool_use
from agentlog.testing import tool_context
from agentlog.testing.stack import Stack


@pytest.fixture(autouse=True)
def fresh_payments() -> Iterator[Payments]:
    payments.reset()
    yield payments


def call(name: str, **tool_input: object) -> str:
    """A line the offline model turns into a tool call."""
    return f"call {name} {json.dumps(tool_input)}"


async def test_the_refunds_agent_refunds_once(agentlog_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=agentlog_stack.api_url or "") as client:
        r = await client.post("/v1/sessions", json={"agent": "refunds", "session_id": "r1"})
    assert r.status_code == 201, r.text
    done = await agentlog_stack.turn("r1", call("refund", order_id="o-100", amount_cents=500))
    assert done["status"] == "completed"
    ((name, result, is_error),) = await agentlog_stack.tool_calls("r1")
    assert (name, is_error) == ("refund", False) and result.startswith("refunded 500 cents of o-100")
    assert payments.refunded("o-100") == 500


async def test_a_wrong_refund_is_an_error_the_model_reads(agentlog_stack: Stack) -> None:
    done = await agentlog_stack.turn(
        "r2",
        call("refund", order_id="o-200", amount_cents=5000)
        + "\n"
        + call("refund", order_id="o-200", amount_cents=-1),
        agent="refunds",
    )
    assert "(error): only 990 cents of o-200 can still be refunded" in done["output_text"]
    assert (
        "(error): invalid input for refund: amount_cents: Input should be greater than 0"
        in done["output_text"]
    )
    assert payments.refunds == {}


async def test_claude_checks_the_order_then_refunds(
    agentlog_stack: Stack, agentlog_fake_anthropic: FakeAnthropic
) -> None:
    agentlog_fake_anthropic.script(
        tool_use(("order_status", {"order_id": "o-100"})),
        tool_use(("refund", {"order_id": "o-100", "amount_cents": 2500})),
        text("Refunded the whole order."),
    )
    done = await agentlog_stack.turn("r3", "please refund o-100", agent="refunds", model="claude-opus-4-8")
    assert done["output_text"] == "Refunded the whole order."
    calls = await agentlog_stack.tool_calls("r3")
    assert [c[0] for c in calls] == ["order_status", "refund"] and not any(c[2] for c in calls)
    assert payments.refunded("o-100") == 2500


async def test_a_redelivered_call_refunds_once(tmp_path: Path) -> None:
    # What agentlog does after a crash between the API's answer and the record: the same call
    # again, with the same key. (`write` tools are not rerun by agentlog; this shows that even
    # a delivery that reached the API twice moves the money once.)
    ctx = tool_context(tmp_path, idempotency_key="call-1")
    first = await tools.refund.run({"order_id": "o-100", "amount_cents": 700}, ctx)
    again = await tools.refund.run({"order_id": "o-100", "amount_cents": 700}, ctx)
    assert first == again and not first.is_error
    assert payments.refunded("o-100") == 700
