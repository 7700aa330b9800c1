"""Users' tools through the whole pipeline: workers that load AGENTLOG_TOOL_MODULES, the
offline model's `call` lines, the executor, the ledger, Postgres."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore import ids
from processors.tools.workspace import workspace_for
from tests.integration.test_tools_pipeline import call, results, turn
from tests.services import Stack, stack_on, wait_until

MODULES = ["tests.custom_tools"]


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, tool_modules=MODULES) as stack:
        await stack.start("projector", "reactor", "model", "tools")  # each loads the modules itself
        await stack.start_api()
        yield stack


async def test_a_decorated_function_runs_from_a_call_line_and_its_result_is_in_sql(stack: Stack) -> None:
    done = await turn(
        stack, "shop", call("charge", order_id="o-1", amount_cents=250), call("lookup", order_id="o-1")
    )
    assert done["status"] == "completed"
    assert await results(stack, "shop") == [
        ("charge", "charged 250 cents to o-1", False),
        ("lookup", '{"order_id": "o-1", "status": "paid"}', False),
    ]
    # The tool saw the call's idempotency key: derived from the call's ledger key.
    (key,) = await stack.sql(
        "SELECT effect_key FROM effects WHERE session_id = 'shop' AND kind = 'tool' AND intent IS NOT NULL"
    )
    workspace = workspace_for(stack.settings.workspace_root, "default", "shop")
    assert (workspace / "charges.log").read_text() == f"o-1 250 {ids.derive(key[0])}\n"


async def test_a_bad_input_is_an_error_result_and_the_tool_does_not_run(stack: Stack) -> None:
    done = await turn(stack, "bad", call("charge", order_id="o-2", amount_cents="lots"))
    assert done["status"] == "completed"
    ((_, text, is_error),) = await results(stack, "bad")
    assert is_error and text.startswith(
        "invalid input for charge: amount_cents: Input should be a valid integer"
    )
    assert not (workspace_for(stack.settings.workspace_root, "default", "bad") / "charges.log").exists()


async def test_the_model_is_offered_the_tools_with_their_schema(stack: Stack) -> None:
    worker = stack.workers["model"]
    (charge,) = worker.tools.definitions(["charge"])
    assert charge["description"] == "Charge part of an order (a stand-in for a payment API)."
    assert charge["input_schema"]["required"] == ["order_id", "amount_cents"]


async def test_a_tool_that_asks_for_approval_waits_for_a_human(stack: Stack) -> None:
    await turn(stack, "close", call("close_account", account_id="a-1"), wait=0)
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:

        async def pending() -> list[dict[str, Any]]:
            r = await client.get("/v1/sessions/close/approvals", params={"status": "pending"})
            return list(r.json()["data"]) if r.status_code == 200 else []

        (waiting,) = await wait_until(pending)
        assert waiting["name"] == "close_account"
        r = await client.post(
            f"/v1/sessions/close/approvals/{waiting['approval_id']}", json={"decision": "approve"}
        )
        assert r.status_code == 202

    async def closed() -> list[tuple[str, str, bool]] | None:
        got = await results(stack, "close")
        return got if got and got[0][1] is not None else None

    assert await wait_until(closed) == [("close_account", "closed a-1", False)]


async def test_an_executor_without_the_tool_answers_with_an_error(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, tool_modules=MODULES) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start("tools", tool_modules=[])  # an executor deployed without the modules
        await stack.start_api()
        done = await turn(stack, "lost", f"call charge {json.dumps({'order_id': 'o', 'amount_cents': 1})}")
    assert done["status"] == "completed"
    assert "(error): unknown tool 'charge'; the tools available are: Bash," in done["output_text"]
