"""What a model call costs: the price it is charged at, from the maintained `genai-prices`
data (upgrade the package for new models and prices, no agentlog release needed), with
`AGENTLOG_PRICES` overriding or adding models. A model no source can price has no price:
its cost is unknown (None, NULL in SQL), never 0."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version

import genai_prices
from genai_prices.types import TieredPrices

from eventstore.events import Price, Usage
from eventstore.models import OFFLINE_MODEL

# USD per million tokens: input, output, cache write, cache read.
Prices = dict[str, tuple[Decimal, Decimal, Decimal, Decimal]]

# The built-in offline model has a notional price, so that cost paths run without a key.
BUILTIN_PRICES: Prices = {
    OFFLINE_MODEL: (Decimal(1), Decimal(5), Decimal("1.25"), Decimal("0.10")),
}
OVERRIDE_SOURCE = "AGENTLOG_PRICES"
BUILTIN_SOURCE = "agentlog"
GENAI_SOURCE = f"genai-prices {version('genai-prices')}"
PROVIDER = "anthropic"


def _alias(model: str, table: Prices) -> str | None:
    """The table's name a model is priced under: itself, or the alias of a dated name
    (claude-opus-4-5-20251101 → claude-opus-4-5)."""
    if model in table:
        return model
    aliases = [name for name in table if model.startswith(name + "-")]
    return max(aliases, key=len) if aliases else None


def _rate(value: Decimal | TieredPrices | None, total_input: int) -> Decimal:
    """One price of a call: a tiered price applies the highest tier the call's whole input
    crosses to all its tokens (genai-prices' and Anthropic's rule)."""
    if value is None:
        return Decimal(0)
    if not isinstance(value, TieredPrices):
        return value
    for tier in sorted(value.tiers, key=lambda t: t.start, reverse=True):
        if total_input > tier.start:
            return tier.price
    return value.base


def _from_genai(model: str, usage: Usage, at: datetime | None) -> Price | None:
    # genai-prices counts cached tokens inside input_tokens; Anthropic reports them apart.
    total_input = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=total_input,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_input_tokens,
                cache_write_tokens=usage.cache_creation_input_tokens,
            ),
            model_ref=model,
            provider_id=PROVIDER,
            genai_request_timestamp=at,
        )
    except LookupError:
        return None
    mp = calc.model_price
    return Price(
        model=calc.model.id,
        source=GENAI_SOURCE,
        input=_rate(mp.input_mtok, total_input),
        output=_rate(mp.output_mtok, total_input),
        cache_write=_rate(mp.cache_write_mtok, total_input),
        cache_read=_rate(mp.cache_read_mtok, total_input),
    )


def price_of(
    model: str, usage: Usage, at: datetime | None = None, overrides: Prices | None = None
) -> Price | None:
    """The price one call of `model` with `usage`, made at `at`, is charged: overrides first,
    then the offline model's, then genai-prices; None when no source knows the model."""
    for table, source in ((overrides or {}, OVERRIDE_SOURCE), (BUILTIN_PRICES, BUILTIN_SOURCE)):
        name = _alias(model, table)
        if name is not None:
            pin, pout, pwrite, pread = table[name]
            return Price(
                model=name, source=source, input=pin, output=pout, cache_write=pwrite, cache_read=pread
            )
    return _from_genai(model, usage, at)


def cost_of(
    model: str, usage: Usage, at: datetime | None = None, overrides: Prices | None = None
) -> Decimal | None:
    """The cost of one call; None (unknown) for a model no price source knows."""
    price = price_of(model, usage, at, overrides)
    return None if price is None else price.cost(usage)


@lru_cache(maxsize=4096)
def _genai_name(model: str) -> str | None:
    price = _from_genai(model, Usage(), None)
    return None if price is None else price.model


def priced_as(model: str, overrides: Prices | None = None) -> str | None:
    """The name a model is priced under, or None if no source knows it (a bounded metric label)."""
    for table in (overrides or {}, BUILTIN_PRICES):
        name = _alias(model, table)
        if name is not None:
            return name
    return _genai_name(model)
