"""Cost from usage: a price table per model, in USD per million tokens."""

from __future__ import annotations

from decimal import Decimal

from eventstore.events import Usage

# USD per million tokens: input, output, cache write, cache read.
Prices = dict[str, tuple[Decimal, Decimal, Decimal, Decimal]]

DEFAULT_PRICES: Prices = {
    "claude-opus-4-5": (Decimal(5), Decimal(25), Decimal("6.25"), Decimal("0.50")),
    "claude-sonnet-4-5": (Decimal(3), Decimal(15), Decimal("3.75"), Decimal("0.30")),
    "claude-haiku-4-5": (Decimal(1), Decimal(5), Decimal("1.25"), Decimal("0.10")),
    # Notional price for the built-in offline model, so that cost paths are exercised.
    "agentlog-offline-1": (Decimal(1), Decimal(5), Decimal("1.25"), Decimal("0.10")),
}

MILLION = Decimal(1_000_000)


def priced_as(model: str, table: Prices) -> str | None:
    """The table's name a model is priced under: itself, or the alias of a dated name
    (claude-opus-4-5-20251101 → claude-opus-4-5); None for a model missing from the table."""
    if model in table:
        return model
    aliases = [name for name in table if model.startswith(name + "-")]
    return max(aliases, key=len) if aliases else None


def price_of(model: str, table: Prices) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """A model's prices; a dated name falls back to its alias; a missing model costs nothing."""
    name = priced_as(model, table)
    return table[name] if name is not None else (Decimal(0),) * 4


def cost_of(model: str, usage: Usage, prices: Prices | None = None) -> Decimal:
    """The cost of one call; a model missing from the table costs nothing."""
    table = DEFAULT_PRICES if prices is None else prices
    pin, pout, pwrite, pread = price_of(model, table)
    total = (
        usage.input_tokens * pin
        + usage.output_tokens * pout
        + usage.cache_creation_input_tokens * pwrite
        + usage.cache_read_input_tokens * pread
    )
    return total / MILLION
