"""A stand-in for a payment provider's SDK, kept in memory: like Stripe's API, a request that
repeats an idempotency key gets the first request's answer and moves no money again."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Refund:
    id: str
    order_id: str
    amount_cents: int


class Payments:
    """Orders with what was paid, and the refunds made, by idempotency key."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to the two paid orders and no refunds."""
        self.paid: dict[str, int] = {"o-100": 2500, "o-200": 990}
        self.refunds: dict[str, Refund] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def refunded(self, order_id: str) -> int:
        return sum(r.amount_cents for r in self.refunds.values() if r.order_id == order_id)

    async def refund(self, order_id: str, amount_cents: int, *, idempotency_key: str) -> Refund:
        """Refund once per key; a repeated key answers the refund it made."""
        async with self._lock:
            if idempotency_key in self.refunds:
                return self.refunds[idempotency_key]
            if order_id not in self.paid:
                raise LookupError(f"no order {order_id}")
            left = self.paid[order_id] - self.refunded(order_id)
            if amount_cents > left:
                raise ValueError(f"only {left} cents of {order_id} can still be refunded")
            made = Refund(f"re_{next(self._ids)}", order_id, amount_cents)
            self.refunds[idempotency_key] = made
            return made


payments = Payments()
