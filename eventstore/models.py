"""Model names, in one place: the offline model, the Claude model new sessions get by
default, and the rule that picks between them. Tests, benchmarks and the load test name
their models from here, so an SDK release that deprecates a name changes one line."""

from __future__ import annotations

# The built-in, deterministic model: no key, no network (processors/model/offline.py).
OFFLINE_MODEL = "agentlog-offline-1"
OFFLINE_PREFIX = "agentlog-offline"

# The Claude model new sessions get when ANTHROPIC_API_KEY is set and no model is named.
# It must be one the SDK lists as current (not deprecated) and one the price data knows:
# tests/unit/test_models.py checks both against the locked SDK and genai-prices.
CLAUDE_DEFAULT = "claude-sonnet-5-5"


def is_offline(model: str) -> bool:
    """Whether the built-in offline model answers this name."""
    return model.startswith(OFFLINE_PREFIX)


def default_model(configured: str, api_key: str | None) -> str:
    """The model of a session that names none: the configured one (AGENTLOG_DEFAULT_MODEL),
    else Claude when an API key is set, else the offline model."""
    if configured:
        return configured
    return CLAUDE_DEFAULT if api_key else OFFLINE_MODEL


# The context window a session gets unless it sets one: every current Claude model reads
# 200,000 tokens (input and output together); the offline model is given the same.
DEFAULT_CONTEXT_WINDOW = 200_000
