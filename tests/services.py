"""Real services for tests: one embedded Postgres per test session, a Tansu broker per stack
(`agentlog.testing.stack`, which users' tests share), and what the project's own tests
compare: snapshots of the derived tables, new log epochs.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices

from agentlog.testing.stack import Broker, Stack, create_database, stack_on, wait_until, workspaces
from eventstore.events import Usage

__all__ = [
    "KEPT_TABLES",
    "TABLES",
    "UNCOMPARED_TABLES",
    "Broker",
    "Stack",
    "create_database",
    "new_epoch",
    "projected",
    "published_cost",
    "snapshot",
    "stack_on",
    "wait_until",
    "workspaces",
]


async def new_epoch(stack: Stack, log_dir: Path) -> Stack:
    """Stop everything and the broker; the same database with a fresh broker (a new log epoch)."""
    await stack.stop_all()
    stack.broker.stop()
    broker = Broker(log_dir)
    settings = stack.settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    return Stack(settings, broker)


async def projected(stack: Stack, count: int) -> bool:
    """Whether the projection holds at least `count` events."""
    return bool((await stack.sql("SELECT count(*) FROM events"))[0][0] >= count)


# Every table a rebuild leaves as the projection had it: the derived ones (store.DERIVED_TABLES)
# and the tombstones; every column but the projection's own clock.
TABLES = {
    "events": "SELECT to_jsonb(e) - 'projected_at' FROM events e ORDER BY event_id",
    "sessions": "SELECT * FROM sessions ORDER BY session_id",
    "turns": "SELECT * FROM turns ORDER BY turn_id",
    "messages": "SELECT * FROM messages ORDER BY message_id",
    "tool_calls": "SELECT * FROM tool_calls ORDER BY session_id, tool_use_id",
    "approvals": "SELECT * FROM approvals ORDER BY approval_id",
    "subagents": "SELECT * FROM subagents ORDER BY parent_session_id, tool_use_id, attempt",
    "deleted_sessions": "SELECT * FROM deleted_sessions ORDER BY session_id",
}
# Not derived from the log: a rebuild keeps them as they are (`instances` is the fleet's
# heartbeat and changes on its own; the others are the ledger, inputs, keys and bookkeeping).
KEPT_TABLES = {
    "effects": "SELECT * FROM effects ORDER BY effect_key",
    "tool_outputs": "SELECT * FROM tool_outputs ORDER BY session_id, tool_use_id",
    "api_tokens": "SELECT * FROM api_tokens ORDER BY token_sha256",
    "analyst_logins": "SELECT * FROM analyst_logins ORDER BY role_name",
    "schema_migrations": "SELECT * FROM schema_migrations ORDER BY version",
    "session_keys": "SELECT * FROM session_keys ORDER BY session_id",
    "master_keys": "SELECT * FROM master_keys ORDER BY key_id",
    "payload_blobs": "SELECT sha256, session_id, content_type, size FROM payload_blobs ORDER BY sha256",
}
# Not derived and not the same after a replay; the api's outbox holds only what is not projected yet.
UNCOMPARED_TABLES = frozenset(
    {"instances", "consumer_offsets", "dead_letters", "partition_owners", "api_outbox"}
)


async def snapshot(stack: Stack, tables: dict[str, str] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived row (or those of `tables`), in a stable order."""
    return {name: await stack.sql(query) for name, query in tables.items()}


def published_cost(model: str, usage: Usage) -> Decimal:
    """A call's cost by genai-prices' own calculator, apart from agentlog's pricing code: the
    model's published prices times the usage (genai-prices counts cached tokens as input)."""
    total_input = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=total_input,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
        ),
        model_ref=model,
        provider_id="anthropic",
    ).total_price
