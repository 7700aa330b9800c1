"""The HTTP model of sub-agents: run a child session synchronously, within a timeout."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.problems import Problem
from api.routes.sessions import PROBLEM, _deps, _wait_for_turn
from eventstore import events as ev
from eventstore import ids, reads

router = APIRouter(prefix="/v1", tags=["subagents"])

SYSTEM = (
    "You are a sub-agent: another agent delegated this task to you. Do it, then answer with the result only."
)


class SubagentRun(BaseModel):
    """A task for a sub-agent, answered within `timeout_s` or not at all (504)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200_000)
    description: str = Field(default="", max_length=500)
    tools: list[str] | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=200)
    timeout_s: float = Field(default=30.0, gt=0, le=300)
    parent_session_id: str | None = Field(default=None, max_length=200)


@router.post("/subagent/run", responses={200: {"description": "the finished child turn"}, 504: PROBLEM})
async def run_subagent(
    request: Request,
    body: SubagentRun,
    idempotency_key: Annotated[str | None, Header(max_length=400)] = None,
) -> JSONResponse:
    """Start a child session with the prompt and wait for its answer. The same
    Idempotency-Key joins the same child (a retry never starts a second sub-agent)."""
    pool, kafka, settings = _deps(request)
    key = idempotency_key or str(uuid.uuid4())
    child = "http-" + str(ids.derive(f"subagent/http/{key}"))
    async with pool.connection() as conn:
        known = await reads.session_exists(conn, child)
    turn_id = ids.turn_id_for(child, "task")
    if not known:
        system = SYSTEM + (f"\n\nThe task: {body.description}" if body.description else "")
        await kafka.append_many(
            [
                ev.session_started(
                    child,
                    model=body.model or settings.default_model,
                    system=system,
                    metadata={"parent_session_id": body.parent_session_id, "via": "http"},
                    tools=body.tools,
                    depth=1,
                    max_depth=settings.subagent_max_depth,
                    parent_session_id=body.parent_session_id,
                ),
                ev.user_message(child, text=body.prompt, idempotency_key="task"),
            ]
        )
    done: dict[str, Any] | None = await _wait_for_turn(pool, child, turn_id, body.timeout_s)
    if done is None:
        raise Problem(
            504,
            "Sub-agent timed out",
            f"the sub-agent did not finish within {body.timeout_s:g} s; it goes on as session {child}",
            session_id=child,
        )
    return JSONResponse({"session_id": child, **done}, headers={"Location": f"/v1/sessions/{child}"})
