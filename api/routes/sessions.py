"""Sessions under /v1: create, list, read, fork, delete. Scoped to the caller's tenant."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from api import agents, scope
from api.auth import Tenant
from api.live import Live
from api.models import AgentList, SessionPage, SessionView
from api.problems import Problem
from api.routes.common import (
    AUTH,
    PROBLEM,
    SessionId,
    SessionSettings,
    agents_of,
    deps,
    live_of,
    not_found,
    owned_session,
    require_session,
    session_started,
)
from eventstore import events as ev
from eventstore import forks, ids, reads

router = APIRouter(prefix="/v1", tags=["sessions"])


class NewSession(SessionSettings):
    """A session to create; without an id the server makes one."""

    session_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    agent: str | None = Field(
        default=None,
        max_length=100,
        description="start from this agent's definition (GET /v1/agents); the fields given here override it",
    )


class Fork(SessionSettings):
    """A new session with the history of another up to an event (by its sequence number)."""

    at_seq: int | None = Field(
        default=None, ge=1, le=2**62, description="the last event to keep (default: all)"
    )
    session_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")


async def _view_when_projected(
    pool: Any, live: Live, tenant: str, session_id: str, fallback: dict[str, Any], within: float = 2.0
) -> dict[str, Any]:
    """The session's view once the projection shows it (read again as its rows are announced),
    or `fallback` after `within` seconds."""
    deadline = time.monotonic() + within
    with live.subscribe(session_id) as sub:
        while True:
            async with scope.connection(pool, tenant) as conn:
                view = await reads.session_view(conn, session_id)
            if view is not None:
                return view
            left = deadline - time.monotonic()
            if left <= 0:
                return fallback
            await sub.wait(min(left, live.poll_interval()))


def _pending_view(started: ev.SessionStarted) -> dict[str, Any]:
    """What a session is before the projection shows it."""
    p = started.payload
    return {
        "id": started.session_id,
        "messages": [{"role": m["role"], "content": m["content"], "turn_id": None} for m in p.history],
        "metadata": {
            "model": p.model,
            "status": "idle",
            "turn_count": 0,
            "total_tokens": {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0},
            "session_cost": "0",
            "started_at": started.occurred_at.isoformat(),
            "last_activity_at": started.occurred_at.isoformat(),
            "tenant_id": started.tenant_id,
            "user_metadata": p.metadata,
        },
    }


async def _create(request: Request, tenant: str, started: ev.SessionStarted) -> JSONResponse:
    """Start the session unless the tenant has (or had) one by that id: 409 then. Another
    tenant's session of that client id is another stored id, so it changes nothing here."""
    pool, kafka, _ = deps(request)
    sid = started.session_id
    client = ids.client_session_id(tenant, sid)
    async with scope.connection(pool, tenant) as conn:
        taken = await reads.session_taken(conn, sid)
    if taken:
        raise Problem(409, "Session exists", f"a session {client} exists already; choose another id")
    await kafka.append(started)
    view = await _view_when_projected(pool, live_of(request), tenant, sid, _pending_view(started))
    return JSONResponse(
        scope.client_ids(tenant, view), status_code=201, headers={"Location": f"/v1/sessions/{client}"}
    )


@router.post(
    "/sessions", status_code=201, response_model=SessionView, responses={**AUTH, 409: PROBLEM, 422: PROBLEM}
)
async def create_session(request: Request, body: NewSession, tenant: Tenant) -> JSONResponse:
    """Create a session with its settings (model, system prompt, tools, TTL, policy, …)."""
    _, _, settings = deps(request)
    sid = ids.scoped_session_id(tenant, body.session_id or f"s-{uuid.uuid4()}")
    own = SessionSettings(**body.model_dump(exclude={"session_id", "agent"}, exclude_unset=True))
    settings_only, recorded = agents.starting_from(agents_of(request), body.agent, own)
    return await _create(request, tenant, session_started(sid, tenant, settings_only, settings, **recorded))


@router.get("/agents", response_model=AgentList, response_model_exclude_none=True, responses={**AUTH})
async def list_agents(request: Request, tenant: Tenant) -> dict[str, Any]:
    """The agents a session can start from (`{"agent": NAME}`), as the agents file defines them."""
    catalog = agents_of(request)
    return {
        "data": [agents.public(n, d, catalog.recorded[n]) for n, d in sorted(catalog.definitions.items())]
    }


@router.get("/sessions", response_model=SessionPage, responses={**AUTH, 422: PROBLEM})
async def list_sessions(
    request: Request,
    tenant: Tenant,
    status: Annotated[str | None, Query(pattern="^(idle|running|expired)$")] = None,
    model: Annotated[
        str | None, Query(max_length=200, pattern=r"^[^\x00]+$", description="sessions of this model")
    ] = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    after: Annotated[
        str | None, Query(max_length=200, description="the last id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The tenant's sessions in id order, a page at a time (keyset: `after` = `last_id`), with
    each one's tokens and cost."""
    pool, _, _ = deps(request)
    start = ids.scoped_session_id(tenant, after) if after is not None else None
    async with scope.connection(pool, tenant) as conn:
        page = await reads.sessions_page(
            conn, tenant, status, started_after, started_before, start, limit, model=model
        )
    return dict(scope.client_ids(tenant, page))


@router.get("/sessions/{session_id}", response_model=SessionView, responses={**AUTH, 404: PROBLEM})
async def get_session(request: Request, session_id: SessionId, tenant: Tenant) -> dict[str, Any]:
    """A session: its messages and metadata (model, turns, tokens, cost, times)."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with scope.connection(pool, tenant) as conn:
        view = await reads.session_view(conn, sid)
    if view is None or view["metadata"]["tenant_id"] != tenant:
        raise not_found(tenant, sid)
    return dict(scope.client_ids(tenant, view))


@router.post(
    "/sessions/{session_id}/fork",
    status_code=201,
    response_model=SessionView,
    responses={**AUTH, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM},
)
async def fork_session(request: Request, session_id: SessionId, body: Fork, tenant: Tenant) -> JSONResponse:
    """A new session whose history is this one's up to event `at_seq` (cut back to the last
    finished turn there): no model call is made, the source is unchanged."""
    pool, _, settings = deps(request)
    source_id = ids.scoped_session_id(tenant, session_id)
    async with scope.connection(pool, tenant) as conn:
        if await reads.session_deleted(conn, source_id, tenant):
            raise Problem(410, "Session deleted", f"session {session_id} was deleted: it has no history")
    async with owned_session(pool, tenant, source_id) as conn:
        source = await forks.history(conn, source_id, body.at_seq)
    new_id = ids.scoped_session_id(
        tenant, body.session_id or f"{session_id[:150]}.fork-{uuid.uuid4().hex[:8]}"
    )
    own = SessionSettings(**body.model_dump(exclude={"session_id", "at_seq"}, exclude_unset=True))
    started = session_started(
        new_id,
        tenant,
        own,
        settings,
        source.config,
        history=source.messages,
        forked_from=source_id,
        forked_at_seq=source.at_seq,
        mcp_tools=source.mcp_tools,
    )
    return await _create(request, tenant, started)


@router.delete("/sessions/{session_id}", status_code=202, responses={**AUTH, 404: PROBLEM})
async def delete_session(request: Request, session_id: SessionId, tenant: Tenant) -> JSONResponse:
    """Delete a session: its rows leave every table and the ledger, its data key is destroyed
    (its records in the log can no longer be read) and its workspace removed; later posts
    answer 404."""
    pool, kafka, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with scope.connection(pool, tenant) as conn:
        if await reads.session_deleted(conn, sid, tenant):
            return JSONResponse({"session_id": session_id, "status": "deleted"}, status_code=202)
    await require_session(pool, sid, tenant)
    await kafka.append(
        ev.SessionDeleted(
            event_id=ids.derive(ids.event_key(sid, "session_deleted")),
            session_id=sid,
            tenant_id=tenant,
            occurred_at=ev.now(),
        )
    )
    # At once rather than when the projector reaches the deletion (it destroys it too).
    await kafka.vault.destroy(sid, tenant)
    return JSONResponse({"session_id": session_id, "status": "deleting"}, status_code=202)
