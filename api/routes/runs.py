"""Synchronous runs: a prompt in, the final answer out, through the same pipeline.

`POST /v1/agent/run` is a stateless run: its session is ephemeral (deleted, not kept,
`agent_run_ttl_s` after it goes idle). `POST /v1/subagent/run` is the HTTP model of
sub-agents: the child session stays, linked to its parent. Both answer 504 problem+json
when the timeout passes first (never a hang); the session goes on and is named there.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import Tenant
from api.models import AgentRunResult
from api.problems import Problem
from api.routes.common import AUTH, PROBLEM, SESSION_ID_PATTERN, deps, live_of, no_nul, traced, wait_for_turn
from eventstore import events as ev
from eventstore import ids, reads

router = APIRouter(prefix="/v1", tags=["runs"])


class Run(BaseModel):
    """A prompt to answer within `timeout_s`."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200_000)
    model: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=100_000)
    tools: list[str] | None = Field(default=None, max_length=100)
    timeout_s: float = Field(default=30.0, gt=0, le=300)

    @field_validator("*")
    @classmethod
    def _recordable(cls, value: Any) -> Any:
        return no_nul(value)


class SubagentRun(Run):
    """A task for a sub-agent (the HTTP model)."""

    description: str = Field(default="", max_length=500)
    # A session id, or it cannot be a parent: refused at once, not after waiting for the
    # projection to show it.
    parent_session_id: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=SESSION_ID_PATTERN
    )


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": AgentRunResult},
    **AUTH,
    422: PROBLEM,
    504: {**PROBLEM, "description": "the run did not finish in time; it goes on as the named session"},
}


async def _run(
    request: Request, session_id: str, started: ev.SessionStarted, prompt: str, timeout_s: float
) -> JSONResponse:
    pool, kafka, _ = deps(request)
    turn_id = ids.turn_id_for(session_id, "run")
    async with pool.connection() as conn:
        known = await reads.session_exists(conn, session_id)
        earlier = await reads.turn_view(conn, session_id, turn_id) if known else None
    if earlier is not None and earlier["user_content"] != [{"type": "text", "text": prompt}]:
        raise Problem(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with another prompt",
            field="Idempotency-Key",
        )
    if not known:
        message = ev.user_message(session_id, text=prompt, idempotency_key="run", tenant_id=started.tenant_id)
        await kafka.append_many(traced([started, message]))
    done = await wait_for_turn(pool, live_of(request), session_id, turn_id, timeout_s)
    if done is None:
        raise Problem(
            504,
            "Run timed out",
            f"the run did not finish within {timeout_s:g} s; it goes on as session {session_id}",
            session_id=session_id,
        )
    return JSONResponse(
        {**done, "session_id": session_id}, headers={"Location": f"/v1/sessions/{session_id}"}
    )


async def _parent_depth(pool: Any, parent_session_id: str, tenant: str) -> int | None:
    """The depth of the tenant's session `parent_session_id`, or None if it has none.

    A Task call's parent may be a moment ahead of the projection; it is known to be in the log
    when the ledger holds its model call (recorded before the answer that asked for the Task
    was appended), and only then is it waited for. A parent that is in neither is unknown now.
    """
    for _ in range(50):
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT depth FROM sessions WHERE session_id = %s AND tenant_id = %s",
                (parent_session_id, tenant),
            )
            row = await cur.fetchone()
            if row is not None:
                return int(row[0])
            cur = await conn.execute(
                "SELECT 1 FROM effects WHERE session_id = %s AND tenant_id = %s LIMIT 1",
                (parent_session_id, tenant),
            )
            if await cur.fetchone() is None:
                return None
        await asyncio.sleep(0.1)
    return None


@router.post("/agent/run", responses=RESPONSES)
async def agent_run(
    request: Request,
    body: Run,
    tenant: Tenant,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=400)] = None,
) -> JSONResponse:
    """One prompt in, the final answer out; nothing is kept past a short TTL."""
    _, _, settings = deps(request)
    key = idempotency_key or str(uuid.uuid4())
    sid = "run-" + str(ids.derive(f"agent/run/{tenant}/{key}"))
    started = ev.session_started(
        sid,
        model=body.model or settings.session_model,
        tenant_id=tenant,
        system=body.system,
        tools=body.tools,
        ttl_s=settings.agent_run_ttl_s,
        ephemeral=True,
        max_depth=settings.subagent_max_depth,
        subagent_mode=settings.subagent_mode,
    )
    return await _run(request, sid, started, body.prompt, body.timeout_s)


@router.post("/subagent/run", responses=RESPONSES)
async def subagent_run(
    request: Request,
    body: SubagentRun,
    tenant: Tenant,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=400)] = None,
) -> JSONResponse:
    """Run a sub-agent synchronously. The same Idempotency-Key joins the same child (a
    retry never starts a second sub-agent)."""
    pool, _, settings = deps(request)
    key = idempotency_key or str(uuid.uuid4())
    sid = "http-" + str(ids.derive(f"subagent/http/{tenant}/{key}"))
    depth = 1
    if body.parent_session_id is not None:
        parent_depth = await _parent_depth(pool, body.parent_session_id, tenant)
        if parent_depth is None:
            raise Problem(
                422, "Unknown parent", f"no session {body.parent_session_id}", field="parent_session_id"
            )
        depth = parent_depth + 1
    if depth > settings.subagent_max_depth:
        raise Problem(
            422,
            "Depth limit",
            f"a sub-agent at depth {depth} exceeds max_depth {settings.subagent_max_depth}",
            field="parent_session_id",
        )
    system = body.system or ev.subagent_system(body.description)
    started = ev.session_started(
        sid,
        model=body.model or settings.session_model,
        tenant_id=tenant,
        system=system,
        metadata={"parent_session_id": body.parent_session_id, "via": "http"},
        tools=body.tools,
        depth=depth,
        max_depth=settings.subagent_max_depth,
        parent_session_id=body.parent_session_id,
        subagent_mode=settings.subagent_mode,
        subagent_timeout_s=settings.subagent_timeout_s,
        max_subagents=settings.max_subagents,
    )
    return await _run(request, sid, started, body.prompt, body.timeout_s)
