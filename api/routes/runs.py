"""Synchronous runs: a prompt in, the final answer out, through the same pipeline.

`POST /v1/agent/run` is a stateless run: its session is ephemeral (deleted, not kept,
`agent_run_ttl_s` after it goes idle) with the server's defaults (approval tools, limits).
`POST /v1/subagent/run` is the HTTP model of sub-agents: the child session stays, linked
to its parent, whose tools bound its own and whose approvals and limits it takes. Both
answer 504 problem+json when the timeout passes first (never a hang); the session goes on
and is named there.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import quotas, scope
from api.auth import Caller, Tenant
from api.models import AgentRunResult
from api.problems import Problem
from api.routes.common import (
    AUTH,
    PROBLEM,
    SESSION_ID_PATTERN,
    SessionSettings,
    deps,
    live_of,
    no_nul,
    session_started,
    traced,
    wait_for_turn,
)
from eventstore import events as ev
from eventstore import ids, lineage, reads
from eventstore.state import SessionState

router = APIRouter(prefix="/v1", tags=["runs"])
STORED_ID_PATTERN = r"^[A-Za-z0-9._:~-]+$"


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
    # projection to show it. A tenant names its own id; the service token the stored one
    # (`tenant~id`, eventstore.ids), which it has from the parent's events.
    parent_session_id: str | None = Field(
        default=None, min_length=1, max_length=300, pattern=STORED_ID_PATTERN
    )
    # The parent's Task call asking for this run: its rules (untrusted content that came in
    # before the call) are read once the projection has the call, so never before what led to it.
    parent_tool_use_id: str | None = Field(default=None, min_length=1, max_length=300)


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
    tenant = started.tenant_id
    client = ids.client_session_id(tenant, session_id)
    turn_id = ids.turn_id_for(session_id, "run")
    async with scope.connection(pool, tenant) as conn:
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
        await quotas.admit_turn(request, started.tenant_id)
        message = ev.user_message(session_id, text=prompt, idempotency_key="run", tenant_id=started.tenant_id)
        await kafka.append_many(traced([started, message]))
    done = await wait_for_turn(pool, live_of(request), tenant, session_id, turn_id, timeout_s)
    if done is None:
        raise Problem(
            504,
            "Run timed out",
            f"the run did not finish within {timeout_s:g} s; it goes on as session {client}",
            session_id=client,
        )
    return JSONResponse({**done, "session_id": client}, headers={"Location": f"/v1/sessions/{client}"})


async def _parent(
    pool: Any, parent_session_id: str, tenant: str, call: str | None = None
) -> SessionState | None:
    """The rules of the tenant's session `parent_session_id`, or None if it has none.

    A Task call's parent may be a moment ahead of the projection; it is known to be in the log
    when the ledger holds its model call (recorded before the answer that asked for the Task
    was appended), and only then is it waited for. A parent that is in neither is unknown now.
    With the Task call's id, also until the projection has that call: everything before it in
    the parent's log (a fetched page's result) is projected by then (one partition, in order).
    """
    without_call = False
    for _ in range(50):
        async with scope.connection(pool, tenant) as conn:
            parent = await lineage.parent_rules(conn, parent_session_id, tenant)
            if parent is not None and call is not None:
                cur = await conn.execute(
                    "SELECT 1 FROM tool_calls WHERE session_id = %s AND tool_use_id = %s",
                    (parent_session_id, call),
                )
                if await cur.fetchone() is None:
                    without_call = True
                    parent = None  # the call is not projected yet: wait, as for the parent
            if parent is not None:
                return parent
            cur = await conn.execute(
                "SELECT 1 FROM effects WHERE session_id = %s AND tenant_id = %s LIMIT 1",
                (parent_session_id, tenant),
            )
            if await cur.fetchone() is None:
                return None
        await asyncio.sleep(0.1)
    if without_call:
        raise Problem(
            422,
            "Unknown parent call",
            f"session {ids.client_session_id(tenant, parent_session_id)} has no tool call {call}",
            field="parent_tool_use_id",
        )
    return None


def _unknown_parent(given: str | None) -> Problem:
    return Problem(422, "Unknown parent", f"no session {given}", field="parent_session_id")


async def _tenant_and_parent(pool: Any, caller: str | None, given: str | None) -> tuple[str, str | None]:
    """The tenant a sub-agent runs for and its parent's stored id. A tenant's own: its client
    id scoped. The service token's: the parent's tenant, whatever the caller might claim (a
    parent it may not name answers as one that does not exist)."""
    if caller is not None:  # a tenant's token
        if given is not None and not re.fullmatch(SESSION_ID_PATTERN, given):
            raise Problem(
                422,
                "Invalid request",
                f"parent_session_id must match {SESSION_ID_PATTERN}",
                field="parent_session_id",
            )
        return caller, ids.scoped_session_id(caller, given) if given is not None else None
    if given is None:
        raise Problem(
            403,
            "Forbidden",
            "the service token starts sub-agents of a session only: give parent_session_id",
            field="parent_session_id",
        )
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT session_tenant(%s)", (given,))
        row = await cur.fetchone()
    if row is None or row[0] is None:
        raise _unknown_parent(given)
    return str(row[0]), given


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
    sid = ids.scoped_session_id(tenant, "run-" + str(ids.derive(f"agent/run/{tenant}/{key}")))
    # The server's defaults as for any new session: approvals (AGENTLOG_APPROVAL_TOOLS), steps,
    # sub-agent limits; only the lifetime differs.
    rules = SessionSettings(
        model=body.model, system=body.system, tools=body.tools, ttl_seconds=settings.agent_run_ttl_s
    )
    started = session_started(sid, tenant, rules, settings, ephemeral=True)
    return await _run(request, sid, started, body.prompt, body.timeout_s)


@router.post("/subagent/run", responses=RESPONSES)
async def subagent_run(
    request: Request,
    body: SubagentRun,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=400)] = None,
) -> JSONResponse:
    """Run a sub-agent synchronously. The same Idempotency-Key joins the same child (a
    retry never starts a second sub-agent). The service token runs it for the parent
    session's tenant, and only with a parent."""
    pool, _, settings = deps(request)
    tenant, parent_id = await _tenant_and_parent(pool, caller, body.parent_session_id)
    key = idempotency_key or str(uuid.uuid4())
    sid = ids.scoped_session_id(tenant, "http-" + str(ids.derive(f"subagent/http/{tenant}/{key}")))
    parent = None
    if parent_id is not None:
        parent = await _parent(pool, parent_id, tenant, body.parent_tool_use_id)
        if parent is None:
            raise _unknown_parent(body.parent_session_id)
    depth = parent.depth + 1 if parent is not None else 1
    defaults = settings.session_defaults()
    max_depth = parent.config.max_depth if parent is not None else defaults.max_depth
    if depth > max_depth:
        raise Problem(
            422,
            "Depth limit",
            f"a sub-agent at depth {depth} exceeds max_depth {max_depth}",
            field="parent_session_id",
        )
    # A child of a session takes its parent's rules and at most its tools (as in the queue
    # model); one without a parent gets the server's defaults, as any new session does.
    own = {
        "model": body.model or defaults.model,
        "system": body.system or ev.subagent_system(body.description),
        "metadata": {
            "parent_session_id": ids.client_session_id(tenant, parent_id) if parent_id else None,
            "via": "http",
        },
        "tools": lineage.child_tools(parent, body.tools) if parent is not None else body.tools,
    }
    started = ev.session_started(
        sid,
        tenant_id=tenant,
        **lineage.child_start(lineage.inherited(parent) if parent is not None else {}, defaults, **own),
        depth=depth,
        parent_session_id=parent_id,
    )
    return await _run(request, sid, started, body.prompt, body.timeout_s)
