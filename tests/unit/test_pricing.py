"""Prices: from genai-prices, AGENTLOG_PRICES first, tiers applied as the price list says,
and a model no source knows priced as unknown (None), never 0."""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices.types import Tier, TieredPrices
from hypothesis import given
from hypothesis import strategies as st

from eventstore import events as ev
from eventstore import pricing
from eventstore.events import Price, Usage, add_cost
from eventstore.models import CLAUDE_DEFAULT, OFFLINE_MODEL
from tests.services import published_cost

UNKNOWN = "claude-no-price-list-knows-this-1"
usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 400_000),
    output_tokens=st.integers(0, 64_000),
    cache_creation_input_tokens=st.integers(0, 300_000),
    cache_read_input_tokens=st.integers(0, 300_000),
)


@given(usage=usages)
def test_a_call_costs_what_genai_prices_charges_for_it(usage: Usage) -> None:
    price = pricing.price_of(CLAUDE_DEFAULT, usage)
    assert price is not None and price.source == pricing.GENAI_SOURCE and price.model == CLAUDE_DEFAULT
    # The stored price times the usage is the cost, whichever tier the call fell in.
    assert (
        price.cost(usage) == pricing.cost_of(CLAUDE_DEFAULT, usage) == published_cost(CLAUDE_DEFAULT, usage)
    )


def test_a_tier_applies_to_all_tokens_once_the_whole_input_crosses_it() -> None:
    tiered = TieredPrices(base=Decimal(3), tiers=[Tier(start=200_000, price=Decimal(6))])
    assert pricing._rate(tiered, 200_000) == Decimal(3)
    assert pricing._rate(tiered, 200_001) == Decimal(6)
    assert pricing._rate(None, 5) == Decimal(0) and pricing._rate(Decimal("0.5"), 10**9) == Decimal("0.5")


def test_a_model_no_source_knows_has_no_price_and_an_unknown_cost() -> None:
    usage = Usage(input_tokens=10, output_tokens=5)
    assert pricing.price_of(UNKNOWN, usage) is None
    assert pricing.cost_of(UNKNOWN, usage) is None
    assert pricing.priced_as(UNKNOWN) is None


def test_overrides_win_and_a_dated_name_is_priced_as_its_alias() -> None:
    overrides = {CLAUDE_DEFAULT: (Decimal(1), Decimal(2), Decimal(3), Decimal(4))}
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    price = pricing.price_of(f"{CLAUDE_DEFAULT}-20990101", usage, overrides=overrides)
    assert price == Price(
        model=CLAUDE_DEFAULT,
        source=pricing.OVERRIDE_SOURCE,
        input=Decimal(1),
        output=Decimal(2),
        cache_write=Decimal(3),
        cache_read=Decimal(4),
    )
    assert price.cost(usage) == Decimal(3)
    assert pricing.priced_as(f"{CLAUDE_DEFAULT}-20990101", overrides) == CLAUDE_DEFAULT


def test_the_offline_model_has_a_notional_price_so_cost_paths_run_without_a_key() -> None:
    price = pricing.price_of(OFFLINE_MODEL, Usage(input_tokens=1_000_000))
    assert (
        price is not None
        and price.source == pricing.BUILTIN_SOURCE
        and price.cost(Usage(input_tokens=1_000_000)) == Decimal(1)
    )


@pytest.mark.parametrize(
    ("a", "b", "total"),
    [
        (Decimal(1), Decimal(2), Decimal(3)),
        (None, Decimal(2), None),
        (Decimal(1), None, None),
        (None, None, None),
    ],
)
def test_an_unknown_part_makes_the_sum_unknown_as_in_sql(
    a: Decimal | None, b: Decimal | None, total: Decimal | None
) -> None:
    assert add_cost(a, b) == total


def test_a_call_recorded_before_prices_were_stored_still_reads() -> None:
    payload = ev.AssistantMessagePayload.model_validate(
        {"model": "m", "content": [], "stop_reason": "end_turn", "cost_usd": "0.5"}
    )
    assert payload.cost_usd == Decimal("0.5") and payload.price is None
    unknown = ev.AssistantMessagePayload.model_validate_json(
        '{"model": "m", "content": [], "stop_reason": "end_turn", "cost_usd": null}'
    )
    assert unknown.cost_usd is None
