"""Tenants: bearer tokens map to tenants. Tokens come from AGENTLOG_API_TOKENS
(`token:tenant,…`) or the `api_tokens` table (only their sha256 is stored).

A tenant id is one rule, checked wherever a tenant enters (the settings, `token create`, the
service's X-Agentlog-Tenant header, the workspace path): a letter or digit, then up to 63
letters, digits and `_.-`, never `..` — safe as a path segment, a header and a log label."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

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
    """The tenant of a stored, unrevoked token."""
    cur = await conn.execute(
        "SELECT tenant_id FROM api_tokens WHERE token_sha256 = %s AND revoked_at IS NULL", (digest(token),)
    )
    row = await cur.fetchone()
    # A token stored for a tenant id outside the rule (before it was enforced) names no tenant.
    return str(row[0]) if row is not None and is_tenant_id(str(row[0])) else None


async def create_token(conn: AsyncConn, tenant_id: str, name: str = "") -> str:
    """A new token for a tenant; the token itself is shown once and never stored."""
    check_tenant_id(tenant_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, tenant_id, name) VALUES (%s, %s, %s)",
        (digest(token), tenant_id, name),
    )
    return token
