"""Turns under /v1: post a user message (Idempotency-Key), read turns and event pages."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from api import agents, quotas, scope
from api.auth import Tenant
from api.models import EventPage, ToolCallList, TurnAccepted, TurnList, TurnView
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
    session_started,
    traced,
)
from api.routes.common import wait_for_turn as _wait_for_turn
from eventstore import events as ev
from eventstore import ids, reads

router = APIRouter(prefix="/v1", tags=["turns"])

# Blocks a user may post; tool results come from tools, thinking from the model.
USER_BLOCKS = ("text", "image", "document", "search_result")


def _block_problem(block: dict[str, Any]) -> str | None:
    """Why the Messages API would refuse this user block (a refused block stays in the
    transcript and would fail every later turn), or None."""
    kind = block.get("type")
    if kind not in USER_BLOCKS:
        return f"type {kind!r} is not accepted in a user message (use one of {', '.join(USER_BLOCKS)})"
    if kind == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
        return "a text block needs a non-empty 'text' string"
    if kind in ("image", "document") and not isinstance(block.get("source"), dict):
        return f"an {kind} block needs a 'source' object"
    return None


class PostMessage(SessionSettings):
    """A user turn: text or Anthropic content blocks; the settings apply to a new session."""

    content: str | list[dict[str, Any]] = Field(description="text, or content blocks")
    agent: str | None = Field(
        default=None, max_length=100, description="a new session starts from this agent (GET /v1/agents)"
    )

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
        elif not value or any("type" not in b for b in value):
            raise ValueError("must be a non-empty list of blocks, each with a 'type'")
        else:
            for i, block in enumerate(value):
                problem = _block_problem(block)
                if problem:
                    raise ValueError(f"block {i}: {problem}")
        return value

    def blocks(self) -> list[dict[str, Any]]:
        """The content as blocks."""
        if isinstance(self.content, str):
            return [{"type": "text", "text": self.content}]
        return self.content


@router.post(
    "/sessions/{session_id}/messages",
    status_code=202,
    responses={
        200: {
            "model": TurnView,
            "description": "the finished turn (?wait, or a finished key's stored answer)",
        },
        202: {"model": TurnAccepted},
        **AUTH,
        404: PROBLEM,
        409: PROBLEM,
        410: PROBLEM,
        413: PROBLEM,
        422: PROBLEM,
        503: PROBLEM,
    },
)
async def post_message(
    request: Request,
    session_id: SessionId,
    body: PostMessage,
    tenant: Tenant,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait for the turn")] = 0,
) -> JSONResponse:
    """Post a user turn (draft-ietf-httpapi-idempotency-key-header): the same key and body
    answer the same turn (its stored answer once it finished, 409 while it still runs);
    the same key with another body is 422. Keys are kept for the session's life."""
    pool, kafka, settings = deps(request)
    key = idempotency_key or str(uuid.uuid4())
    sid = ids.scoped_session_id(tenant, session_id)
    turn_id = ids.turn_id_for(sid, key)
    blocks = body.blocks()
    # One query: the tombstone, the session and this key's turn (the tenant's rows only); for
    # an id the tenant has not, whether another holds it (stored before ids were scoped).
    (found,) = await scope.rows(
        pool,
        tenant,
        "SELECT d.session_id IS NOT NULL, s.status, t.user_content, s.policy, s.tenant_id, t.status,"
        " CASE WHEN s.session_id IS NULL AND d.session_id IS NULL THEN session_tenant(%(sid)s) END"
        " FROM (SELECT 1) one"
        " LEFT JOIN deleted_sessions d ON d.session_id = %(sid)s"
        " LEFT JOIN sessions s ON s.session_id = %(sid)s"
        " LEFT JOIN turns t ON t.turn_id = %(tid)s AND t.session_id = %(sid)s",
        {"sid": sid, "tid": turn_id},
    )
    if found[0] or found[6] not in (None, tenant):
        raise not_found(tenant, sid)
    row = found[1:6] if found[1] is not None else None
    headers = {"Location": f"/v1/sessions/{session_id}/turns/{turn_id}", "Idempotency-Key": key}
    if row is not None and row[3] != tenant:
        raise not_found(tenant, sid)
    if row is not None and row[1] is not None:
        if row[1] != blocks:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "this Idempotency-Key was used with another body",
                field="Idempotency-Key",
            )
        if row[4] in ("queued", "running") and idempotency_key is not None:
            done = (
                await _wait_for_turn(pool, live_of(request), tenant, sid, turn_id, wait) if wait > 0 else None
            )
            if done is None:
                raise Problem(
                    409,
                    "Request in progress",
                    "a request with this Idempotency-Key is still being processed",
                    headers={**headers, "Retry-After": "1"},
                )
            return JSONResponse(done, status_code=200, headers=headers)
        async with scope.connection(pool, tenant) as conn:
            stored = await reads.turn_view(conn, sid, turn_id)
        return JSONResponse(scope.client_ids(tenant, stored), status_code=200, headers=headers)
    if row is not None and row[0] == "expired":
        raise Problem(410, "Session expired", f"session {session_id} expired after its idle TTL")
    if row is not None and row[0] == "running" and row[2] == "reject":
        raise Problem(
            409,
            "Turn in progress",
            f"session {session_id} is running a turn and its policy is reject; retry when it ends",
        )
    await quotas.admit_turn(request, tenant)  # a new turn: the tenant's turn and token limits
    appends: list[ev.Event] = []
    if row is None:
        own = SessionSettings(**body.model_dump(exclude={"content", "agent"}, exclude_unset=True))
        settings_only, recorded = agents.starting_from(agents_of(request), body.agent, own)
        appends.append(session_started(sid, tenant, settings_only, settings, **recorded))
    request_hash = hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()
    appends.append(
        ev.user_message(sid, content=blocks, idempotency_key=key, request_hash=request_hash, tenant_id=tenant)
    )
    await kafka.append_many(traced(appends))
    if wait > 0:
        done = await _wait_for_turn(pool, live_of(request), tenant, sid, turn_id, wait)
        if done is not None:
            return JSONResponse(done, status_code=200, headers=headers)
    accepted = TurnAccepted(session_id=session_id, turn_id=turn_id, idempotency_key=key, status="accepted")
    return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)


@router.get("/sessions/{session_id}/turns", response_model=TurnList, responses={**AUTH, 404: PROBLEM})
async def list_turns(request: Request, session_id: SessionId, tenant: Tenant) -> dict[str, Any]:
    """A session's turns in the order they were asked: status, usage, cost and latency."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        return {"data": await reads.turns(conn, sid)}


@router.get(
    "/sessions/{session_id}/tool_calls", response_model=ToolCallList, responses={**AUTH, 404: PROBLEM}
)
async def list_tool_calls(request: Request, session_id: SessionId, tenant: Tenant) -> dict[str, Any]:
    """A session's tool calls: input, result, duration, idempotency class (as the effect
    ledger recorded the run) and, for a sub-agent, its child sessions."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        calls = await reads.tool_calls(conn, sid)
    return {"data": scope.client_ids(tenant, calls)}


@router.get(
    "/sessions/{session_id}/turns/{turn_id}", response_model=TurnView, responses={**AUTH, 404: PROBLEM}
)
async def get_turn(
    request: Request, session_id: SessionId, turn_id: Annotated[str, Path(max_length=200)], tenant: Tenant
) -> dict[str, Any]:
    """One turn: status, steps, the turn's messages, the answer, usage and cost."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        turn = await reads.turn_view(conn, sid, turn_id)
    if turn is None:
        raise Problem(404, "Turn not found", f"no turn {turn_id} in session {session_id}")
    return dict(scope.client_ids(tenant, turn))


@router.get("/sessions/{session_id}/events", response_model=EventPage, responses={**AUTH, 404: PROBLEM})
async def get_events(
    request: Request,
    session_id: SessionId,
    tenant: Tenant,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A session's events after sequence number `after`, oldest first."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        page = await reads.events_page(conn, sid, after, limit)
    return dict(scope.client_ids(tenant, page))
