"""Tenants: bearer tokens map to tenants. Tokens come from AGENTLOG_API_TOKENS
(`token:tenant,…`) or the `api_tokens` table (only their sha256 is stored)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from eventstore.store import AsyncConn

TOKEN_PREFIX = "agl_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_tokens(spec: str) -> dict[str, str]:
    """`token:tenant,token2:tenant2` → {token: tenant}."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, sep, tenant = item.rpartition(":")
        if not sep or not token or not tenant:
            raise ValueError(f"AGENTLOG_API_TOKENS entries are token:tenant, got {item!r}")
        out[token] = tenant
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
    return str(row[0]) if row is not None else None


async def create_token(conn: AsyncConn, tenant_id: str, name: str = "") -> str:
    """A new token for a tenant; the token itself is shown once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, tenant_id, name) VALUES (%s, %s, %s)",
        (digest(token), tenant_id, name),
    )
    return token
