"""Per-tenant quotas at the api (eventstore/limits.py): requests per second, turns queued or
running, model tokens per UTC day. Each is answered 429 problem+json naming the limit, with a
Retry-After computed from it: when the bucket holds a request again, when a turn may have
ended, when the day's tokens reset.

The request rate is a token bucket per tenant in this process's memory (no round trip; with N
api processes a tenant gets N times the rate). Turns and tokens are checked only when a new
turn is about to be appended, against the projection: the open turns by one indexed count,
the day's tokens from `model_calls`, cached a few seconds per tenant. Both lag the log by the
projector's delay, so a burst of posts can pass a limit by what is not yet projected.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request

from api import scope
from api.auth import Caller
from api.problems import Problem
from eventstore import limits
from eventstore.limits import TenantLimits
from eventstore.settings import Settings

# How long a tenant's count of today's tokens is reused.
TOKENS_CACHE_S = 5.0
# Bounds of the Retry-After for a turn limit (estimated from the tenant's recent turns).
TURN_RETRY_S = (1, 60)


def too_many(which: str, detail: str, retry_after_s: float, **extra: object) -> Problem:
    """The 429 answer: which limit (`requests`, `turns`, `tokens`) and when to come back."""
    seconds = max(1, math.ceil(retry_after_s))
    return Problem(
        429,
        "Too many requests",
        detail,
        {"Retry-After": str(seconds)},
        limit=which,
        retry_after=seconds,
        **extra,
    )


@dataclass
class Quotas:
    """The limits of every tenant and what this process counts against them."""

    table: dict[str, TenantLimits]
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (left, at)
    tokens: dict[str, tuple[int, float]] = field(default_factory=dict)  # tenant -> (used, at)

    @classmethod
    def of_settings(cls, settings: Settings) -> Quotas:
        return cls(
            limits.from_settings(
                settings.tenant_rate,
                settings.tenant_max_turns,
                settings.tenant_tokens_per_day,
                settings.tenant_limits,
            )
        )

    def of(self, tenant: str) -> TenantLimits:
        return self.table.get(tenant) or self.table[limits.DEFAULT]

    def take(self, tenant: str, now: float) -> float | None:
        """Take one request from the tenant's bucket: None if there was one, else the
        seconds until there is."""
        mine = self.of(tenant)
        if mine.rate is None or mine.burst is None:
            return None
        left, at = self.buckets.get(tenant, (float(mine.burst), now))
        left = min(float(mine.burst), left + (now - at) * mine.rate)
        if left >= 1.0:
            self.buckets[tenant] = (left - 1.0, now)
            return None
        self.buckets[tenant] = (left, now)
        return (1.0 - left) / mine.rate


def quotas_of(request: Request) -> Quotas:
    quotas: Quotas = request.app.state.quotas
    return quotas


async def limit_requests(request: Request, caller: Caller) -> None:
    """A dependency of every /v1 route: the tenant's request rate (in memory, no I/O). The
    service token (agentlog's own processes) is not limited here: the one route it may use
    checks the limits of the tenant it acts for (`admit_turn`); the others answer it 403."""
    if caller is None:
        return
    tenant = caller
    quotas = quotas_of(request)
    wait = quotas.take(tenant, time.monotonic())
    if wait is not None:
        mine = quotas.of(tenant)
        raise too_many(
            "requests",
            f"tenant {tenant} may send {mine.rate:g} requests per second (bursts of {mine.burst})"
            " to this api process",
            wait,
        )


async def admit_turn(request: Request, tenant: str) -> None:
    """Before a new turn is appended: the tenant's open turns and today's tokens, where limited."""
    quotas = quotas_of(request)
    mine = quotas.of(tenant)
    if mine.tokens is None and mine.turns is None:
        return
    pool = request.app.state.pool
    if mine.tokens is not None:
        used, at = quotas.tokens.get(tenant, (0, -math.inf))
        if time.monotonic() - at > TOKENS_CACHE_S:
            async with scope.connection(pool, tenant) as conn:
                used = await limits.tokens_today(conn, tenant)
            quotas.tokens[tenant] = (used, time.monotonic())
        if used >= mine.tokens:
            raise too_many(
                "tokens",
                f"tenant {tenant} used {used} model tokens today (UTC), its limit is {mine.tokens}",
                limits.seconds_to_midnight(datetime.now(UTC)),
            )
    if mine.turns is not None:
        async with scope.connection(pool, tenant) as conn:
            running = await limits.open_turns(conn, tenant)
            if running >= mine.turns:
                typical = await limits.turn_seconds(conn, tenant)
                low, high = TURN_RETRY_S
                raise too_many(
                    "turns",
                    f"tenant {tenant} has {running} turns queued or running, its limit is {mine.turns}",
                    min(high, max(low, typical or low)),
                )
