"""Tenants: bearer tokens map to tenants. Tokens come from AGENTLOG_API_TOKENS
(`token:tenant,…`) or the `api_tokens` table (only their sha256 is stored).

A tenant id is one rule, checked wherever a tenant enters (the settings, `token create`, the
workspace path): a letter or digit, then up to 63 letters, digits and `_.-`, never `..` — safe
as a path segment, a header and a log label, and never holding the `~` of a stored session id
(`eventstore.ids`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from eventstore.store import AsyncConn

TOKEN_PREFIX = "agl_"
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TENANT_ID_RULE = "a letter or digit, then up to 63 letters, digits, '_', '.' or '-', never '..'"


class InvalidTenant(ValueError):
    """A tenant id outside the rule; the message says what the rule is."""


def is_tenant_id(tenant: str) -> bool:
    """Whether `tenant` is a valid tenant id."""
    return TENANT_ID.fullmatch(tenant) is not None and ".." not in tenant


def check_tenant_id(tenant: str) -> str:
    """`tenant` itself, or InvalidTenant naming the rule."""
    if not is_tenant_id(tenant):
        raise InvalidTenant(f"invalid tenant id {tenant[:80]!r}: {TENANT_ID_RULE}")
    return tenant


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(spec: str) -> dict[str, str]:
    """`token:tenant,token2:tenant2` → {token: tenant}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, sep, tenant = item.rpartition(":")
        if not sep or not token or not tenant:
            raise ValueError("AGENTLOG_API_TOKENS entries are token:tenant, one has no ':'")
        out[token] = check_tenant_id(tenant)
    return out


def from_environment(token: str, configured: dict[str, str]) -> str | None:
    """The tenant of a token configured in the environment (compared in constant time)."""
    for known, tenant in configured.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return tenant
    return None


async def tenant_for_token(conn: AsyncConn, token: str) -> str | None:
    """The tenant of a stored token that is neither revoked nor expired."""
    cur = await conn.execute(
        "SELECT tenant_id FROM api_tokens WHERE token_sha256 = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        (digest(token),),
    )
    row = await cur.fetchone()
    # A token stored for a tenant id outside the rule (before it was enforced) names no tenant.
    return str(row[0]) if row is not None and is_tenant_id(str(row[0])) else None


async def create_token(
    conn: AsyncConn, tenant_id: str, name: str = "", expires_in: timedelta | None = None
) -> str:
    """A new token for a tenant (expiring after `expires_in`, if given); the token itself is
    shown once and never stored."""
    check_tenant_id(tenant_id)
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, tenant_id, name, expires_at) VALUES (%s, %s, %s, now() + %s)",
        (digest(token), tenant_id, name, expires_in),
    )
    return token


# A stored token is named by the start of its sha256: enough to tell tokens apart, useless to
# an attacker (the token cannot be found from its digest).
TOKEN_ID_CHARS = 12


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as `agentlog token list` shows it (never the token itself)."""

    token_id: str
    tenant_id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    status: str  # active, expired or revoked


_INFO = (
    f"SELECT left(token_sha256, {TOKEN_ID_CHARS}), tenant_id, name, created_at, expires_at, revoked_at,"
    " CASE WHEN revoked_at IS NOT NULL THEN 'revoked'"
    "      WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'"
    "      ELSE 'active' END"
    " FROM api_tokens"
)
_TOKEN_ID = re.compile(rf"[0-9a-f]{{{TOKEN_ID_CHARS},64}}")


async def list_tokens(conn: AsyncConn, tenant_id: str | None = None) -> list[TokenInfo]:
    """The stored tokens (of one tenant, if given), oldest first."""
    cur = await conn.execute(
        _INFO + " WHERE %s::text IS NULL OR tenant_id = %s ORDER BY created_at, token_sha256",
        (tenant_id, tenant_id),
    )
    return [TokenInfo(*row) for row in await cur.fetchall()]


class UnknownToken(LookupError):
    """No stored token, or more than one, answers to what was given; the message says which."""


async def revoke_token(conn: AsyncConn, token_or_id: str) -> TokenInfo:
    """Revoke one stored token, named by the token itself or by its id (`list_tokens`, or any
    longer prefix of its sha256); revoking a revoked token changes nothing. Returns it."""
    given = token_or_id.strip()
    if given.startswith(TOKEN_PREFIX):
        prefix = digest(given)
    elif _TOKEN_ID.fullmatch(given):
        prefix = given
    else:
        raise UnknownToken(
            f"name a token by its id ({TOKEN_ID_CHARS} or more hex digits, from `agentlog token list`)"
            f" or by the token itself ({TOKEN_PREFIX}…)"
        )
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT token_sha256 FROM api_tokens WHERE starts_with(token_sha256, %s) LIMIT 2 FOR UPDATE",
            (prefix,),
        )
        found = await cur.fetchall()
        if len(found) != 1:
            raise UnknownToken("no stored token has that id" if not found else "that id names several tokens")
        await conn.execute(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_sha256 = %s",
            (found[0][0],),
        )
        cur = await conn.execute(_INFO + " WHERE token_sha256 = %s", (found[0][0],))
        row = await cur.fetchone()
    assert row is not None
    return TokenInfo(*row)
