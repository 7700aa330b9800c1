"""Tools as a user writes them, for the tests (loaded with AGENTLOG_TOOL_MODULES=tests.custom_tools).

Each run leaves a line in a file of the session's workspace, so a test can count the runs
and see the idempotency key every run was given.
"""

from __future__ import annotations

import json
from typing import Any

from agentlog import ToolContext, tool


@tool(effect="write", timeout_s=30)
def charge(order_id: str, amount_cents: int, ctx: ToolContext) -> str:
    """Charge part of an order (a stand-in for a payment API).

    Args:
        order_id: the order to charge.
        amount_cents: how much, in cents.
    """
    with open(ctx.workspace / "charges.log", "a") as out:
        out.write(f"{order_id} {amount_cents} {ctx.idempotency_key}\n")
    ctx.log.info("charged %s", order_id)
    return f"charged {amount_cents} cents to {order_id}"


@tool(effect="read")
async def lookup(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Look an order up.

    Args:
        order_id: the order.
    """
    with open(ctx.workspace / "lookups.log", "a") as out:  # noqa: ASYNC230 - a test's tiny file
        out.write(f"{order_id} {ctx.idempotency_key}\n")
    return {"order_id": order_id, "status": "paid"}


@tool(effect="write", approval=True)
def close_account(account_id: str) -> str:
    """Close an account: every call waits for a human's approval."""
    return f"closed {account_id}"


@tool(effect="guarded_write")
def set_price(sku: str, cents: int, ctx: ToolContext) -> str:
    """Set a product's price (a write whose effect can be checked afterwards)."""
    prices = ctx.workspace / "prices.json"
    current = json.loads(prices.read_text()) if prices.exists() else {}
    prices.write_text(json.dumps({**current, sku: cents}))
    with open(ctx.workspace / "prices.log", "a") as out:
        out.write(f"{sku} {cents} {ctx.idempotency_key}\n")
    return f"{sku} costs {cents} cents"


@set_price.check
def price_is_set(sku: str, cents: int, ctx: ToolContext) -> bool:
    prices = ctx.workspace / "prices.json"
    return prices.exists() and json.loads(prices.read_text()).get(sku) == cents
