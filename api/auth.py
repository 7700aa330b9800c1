"""Who is calling: a bearer token maps to a tenant; every read and write is scoped to it.

Tokens come from AGENTLOG_API_TOKENS (`token:tenant,…`) or the `api_tokens` table. No
token is 401 with `WWW-Authenticate: Bearer` (unless AGENTLOG_AUTH_REQUIRED is off, for
local development, when it is the `default` tenant); a token nobody issued, or one expired
or revoked, is always 401.
The service token (AGENTLOG_SERVICE_TOKEN) is agentlog's own processes (the Task tool's HTTP
model): it may start a sub-agent of a session, for that session's tenant, and nothing else;
every other route answers it 403.
Another tenant's session answers 404, exactly as a session that does not exist.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from api.problems import Problem
from eventstore import tenants
from eventstore.store import AsyncConn

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="agentlog"'}


async def current_tenant(request: Request) -> str:
    """The caller's tenant, from `Authorization: Bearer <token>`; the service token is 403."""
    tenant = await current_caller(request)
    if tenant is None:
        raise Problem(
            403,
            "Forbidden",
            "the service token may only start sub-agents of a session (POST /v1/subagent/run"
            " with parent_session_id); use a tenant's token",
        )
    return tenant


async def current_caller(request: Request) -> str | None:
    """The caller's tenant, or None for the service token (agentlog itself, no tenant of its own)."""
    settings = request.app.state.settings
    header = request.headers.get("authorization")
    if header is None:
        if settings.auth_required:
            raise Problem(401, "Unauthorized", "send Authorization: Bearer <token>", CHALLENGE)
        return "default"
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "Unauthorized", "the Authorization header must be: Bearer <token>", CHALLENGE)
    if settings.service_token and hmac.compare_digest(token.encode(), settings.service_token.encode()):
        return None
    tenant = tenants.from_environment(token, request.app.state.tokens)
    if tenant is None:
        async with request.app.state.pool.connection() as conn:
            tenant = await tenants.tenant_for_token(conn, token)
    if tenant is None:
        raise Problem(
            401,
            "Unauthorized",
            "unknown, expired or revoked token",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return tenant


Tenant = Annotated[str, Depends(current_tenant)]
# A tenant's token, or the service token (None): only the route the service may use takes it.
Caller = Annotated[str | None, Depends(current_caller)]


async def owned(conn: AsyncConn, session_id: str, tenant: str) -> str | None:
    """The session's status if the tenant owns it, else None (unknown and foreign alike)."""
    cur = await conn.execute(
        "SELECT status FROM sessions WHERE session_id = %s AND tenant_id = %s", (session_id, tenant)
    )
    row = await cur.fetchone()
    return str(row[0]) if row is not None else None
