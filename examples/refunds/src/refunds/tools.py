"""The refund tools: loaded by every agentlog process through the `agentlog.tools` entry point."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agentlog import ToolContext, ToolError, tool
from refunds.payments import payments


@tool(effect="read")
def order_status(order_id: str) -> dict[str, Any]:
    """What an order was paid and how much of it was refunded.

    Args:
        order_id: the order, e.g. o-100.
    """
    if order_id not in payments.paid:
        raise ToolError(f"no order {order_id}")
    return {
        "order_id": order_id,
        "paid_cents": payments.paid[order_id],
        "refunded_cents": payments.refunded(order_id),
    }


@tool(effect="write", timeout_s=30)
async def refund(order_id: str, amount_cents: Annotated[int, Field(gt=0)], ctx: ToolContext) -> str:
    """Refund part of an order.

    Args:
        order_id: the order to refund.
        amount_cents: how much to refund, in cents (at most what is left of the payment).
    """
    # The key is the same on every delivery of this call: the payment API makes the refund
    # once however often agentlog delivers it (a crash after the API answered included).
    try:
        made = await payments.refund(order_id, amount_cents, idempotency_key=ctx.idempotency_key)
    except (LookupError, ValueError) as exc:
        raise ToolError(str(exc)) from None
    ctx.log.info("refund %s of %s cents for %s", made.id, amount_cents, order_id)
    return f"refunded {made.amount_cents} cents of {order_id} ({made.id})"
