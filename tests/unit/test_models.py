"""The models new sessions get, checked against the locked SDK and price data, so that a
lock update that deprecates or drops the default fails here, on purpose, not in a turn."""

from __future__ import annotations

from typing import get_args

import pytest
from anthropic.types import Model

from eventstore import models, pricing
from eventstore.events import Usage
from eventstore.settings import Settings
from processors.model.claude import sdk_deprecations
from tests.services import published_cost


def test_the_default_claude_model_is_current_in_the_sdk_and_priced() -> None:
    names = {arg for alias in get_args(Model) for arg in get_args(alias) if isinstance(arg, str)}
    assert models.CLAUDE_DEFAULT in names
    assert models.CLAUDE_DEFAULT not in sdk_deprecations()
    assert pricing.price_of(models.CLAUDE_DEFAULT, Usage(input_tokens=1)) is not None


@pytest.mark.parametrize(
    ("configured", "key", "model"),
    [
        ("", None, models.OFFLINE_MODEL),
        ("", "sk-test", models.CLAUDE_DEFAULT),
        ("house-model-7", None, "house-model-7"),
        (models.OFFLINE_MODEL, "sk-test", models.OFFLINE_MODEL),
    ],
)
def test_new_sessions_get_the_offline_model_without_a_key_and_claude_with_one(
    configured: str, key: str | None, model: str
) -> None:
    assert models.default_model(configured, key) == model
    settings = Settings(default_model=configured, anthropic_api_key=key)
    assert settings.session_model == model


def test_the_offline_model_is_told_apart_by_its_prefix() -> None:
    assert models.is_offline(models.OFFLINE_MODEL) and not models.is_offline(models.CLAUDE_DEFAULT)


def test_every_model_the_sdk_lists_costs_its_published_price_or_is_visibly_unknown() -> None:
    usage = Usage(input_tokens=1200, output_tokens=300, cache_creation_input_tokens=800)
    names = {arg for alias in get_args(Model) for arg in get_args(alias) if isinstance(arg, str)}
    priced = 0
    for name in sorted(names):
        price = pricing.price_of(name, usage)
        if price is None:
            continue  # unknown: NULL in SQL and null in the api, never 0
        assert price.cost(usage) == published_cost(name, usage) > 0, name
        priced += 1
    assert priced >= len(names) // 2  # the price data knows most of the SDK's models
