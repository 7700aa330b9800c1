"""Per-tenant limits: requests per second (with a burst), turns queued or running at once, and
model tokens per UTC day; their compact spec, and the counts in Postgres they are held to.

A spec, as AGENTLOG_TENANT_LIMITS holds it: `tenant:key=value,…;tenant2:…` with the keys
`rate` (`requests_per_s/burst`), `turns` and `tokens`; `*` is every tenant not named, and a
tenant's entry inherits from `*` what it does not set. `0` (or no value) means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from eventstore.store import AsyncConn

DEFAULT = "*"
KEYS = ("rate", "turns", "tokens")


@dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits; None is unlimited."""

    rate: float | None = None  # requests per second, refilled continuously
    burst: int | None = None  # requests at once on a full bucket
    turns: int | None = None  # turns queued or running
    tokens: int | None = None  # model tokens (input, output and cache) per UTC day


def _number(tenant: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"tenant limits: {tenant}: {key}={value!r} is not a number") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"tenant limits: {tenant}: {key} must be a finite number >= 0")
    return number


def _entry(tenant: str, body: str, base: TenantLimits) -> TenantLimits:
    limits = base
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in KEYS:
            raise ValueError(
                f"tenant limits: {tenant}: {item!r} is not one of {', '.join(k + '=…' for k in KEYS)}"
            )
        if key == "rate":
            per_s, _, burst = value.partition("/")
            rate = _number(tenant, "rate", per_s)
            size = _number(tenant, "rate burst", burst) if burst else max(1.0, rate)
            limits = replace(limits, rate=rate or None, burst=max(1, int(size)) if rate else None)
        else:
            count = int(_number(tenant, key, value))
            limits = replace(limits, **{key: count or None})
    return limits


def parse(spec: str, default: TenantLimits | None = None) -> dict[str, TenantLimits]:
    """The spec as limits by tenant (`*` always present), or ValueError naming what is wrong."""
    bodies: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        tenant, sep, body = part.partition(":")
        tenant = tenant.strip()
        if not sep or not tenant:
            raise ValueError(f"tenant limits: {part!r} is not tenant:key=value,…")
        bodies[tenant] = body
    base = _entry(DEFAULT, bodies.pop(DEFAULT, ""), default or TenantLimits())
    return {DEFAULT: base, **{tenant: _entry(tenant, body, base) for tenant, body in bodies.items()}}


def from_settings(rate: str, turns: int | None, tokens: int | None, spec: str) -> dict[str, TenantLimits]:
    """The limits of every tenant: AGENTLOG_TENANT_RATE, _MAX_TURNS and _TOKENS_PER_DAY for all,
    AGENTLOG_TENANT_LIMITS per tenant."""
    given = {"rate": rate.strip(), "turns": str(turns or ""), "tokens": str(tokens or "")}
    base = _entry(DEFAULT, ",".join(f"{k}={v}" for k, v in given.items() if v), TenantLimits())
    return parse(spec, base)


def seconds_to_midnight(now: datetime) -> int:
    """Whole seconds until the next UTC midnight (at least 1), when a day's tokens reset."""
    utc = now.astimezone(UTC)
    midnight = (utc + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - utc).total_seconds() + 0.999))


async def open_turns(conn: AsyncConn, tenant: str) -> int:
    """The tenant's turns queued or running, as projected."""
    cur = await conn.execute(
        "SELECT count(*) FROM turns WHERE tenant_id = %s AND status IN ('queued', 'running')", (tenant,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def turn_seconds(conn: AsyncConn, tenant: str) -> float | None:
    """How long the tenant's turns that ended in the last hour took, on average (None without
    any): about when a running one may end."""
    cur = await conn.execute(
        "SELECT avg(extract(epoch FROM completed_at - requested_at)) FROM turns"
        " WHERE tenant_id = %s AND completed_at > now() - interval '1 hour'",
        (tenant,),
    )
    row = await cur.fetchone()
    return float(row[0]) if row is not None and row[0] is not None else None


async def tokens_today(conn: AsyncConn, tenant: str) -> int:
    """The tenant's model tokens since UTC midnight, from the projected `model_calls`."""
    cur = await conn.execute(
        "SELECT coalesce(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)"
        " + coalesce(cache_read_tokens, 0) + coalesce(cache_write_tokens, 0)), 0)"
        " FROM model_calls WHERE tenant_id = %s"
        " AND occurred_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        (tenant,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
