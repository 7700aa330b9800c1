"""Cost from usage: a price table per model, in USD per million tokens."""

from __future__ import annotations

from decimal import Decimal

from eventstore.events import Usage

# USD per million tokens: input, output, cache write, cache read.
DEFAULT_PRICES: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] = {
    "claude-opus-4-5": (Decimal(5), Decimal(25), Decimal("6.25"), Decimal("0.50")),
    "claude-sonnet-4-5": (Decimal(3), Decimal(15), Decimal("3.75"), Decimal("0.30")),
    "claude-haiku-4-5": (Decimal(1), Decimal(5), Decimal("1.25"), Decimal("0.10")),
    # Notional price for the built-in offline model, so that cost paths are exercised.
    "agentlog-offline-1": (Decimal(1), Decimal(5), Decimal("1.25"), Decimal("0.10")),
}

MILLION = Decimal(1_000_000)


def cost_of(
    model: str, usage: Usage, prices: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] | None = None
) -> Decimal:
    """The cost of one call; a model missing from the table costs nothing."""
    table = DEFAULT_PRICES if prices is None else prices
    pin, pout, pwrite, pread = table.get(model, (Decimal(0),) * 4)
    total = (
        usage.input_tokens * pin
        + usage.output_tokens * pout
        + usage.cache_creation_input_tokens * pwrite
        + usage.cache_read_input_tokens * pread
    )
    return total / MILLION
