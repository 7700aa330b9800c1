"""Sessions, turns and event pages under /v1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.problems import Problem
from eventstore import events as ev
from eventstore import ids, reads
from eventstore.events import TurnPolicy
from eventstore.log import KafkaLog
from eventstore.settings import Settings

router = APIRouter(prefix="/v1", tags=["sessions"])

SessionId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")]
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


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


class PostMessage(BaseModel):
    """A user turn: text or Anthropic content blocks; model and system apply to a new session."""

    model_config = ConfigDict(extra="forbid")

    content: str | list[dict[str, Any]] = Field(description="text, or content blocks")
    model: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=100_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: TurnPolicy | None = Field(
        default=None, description="for a new session: what a message does while a turn runs"
    )
    max_steps: int | None = Field(default=None, ge=1, le=1000, description="model calls per turn")
    token_budget: int | None = Field(default=None, ge=1, description="tokens per session")
    tools: list[str] | None = Field(default=None, max_length=100, description="tool names allowed")
    approvals: list[str] | None = Field(
        default=None, max_length=100, description="tool names whose calls wait for a human's approval"
    )
    ttl_seconds: int | None = Field(default=None, ge=1, description="idle seconds before expiry")
    max_tokens: int | None = Field(default=None, ge=1, le=128_000, description="per model call")

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


class TurnAccepted(BaseModel):
    session_id: str
    turn_id: str
    idempotency_key: str
    status: str


def _deps(request: Request) -> tuple[Any, KafkaLog, Settings]:
    state = request.app.state
    return state.pool, state.kafka, state.settings


@router.post(
    "/sessions/{session_id}/messages",
    status_code=202,
    responses={
        200: {"description": "the completed turn (with ?wait)"},
        202: {"model": TurnAccepted},
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
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait for the turn")] = 0,
) -> JSONResponse:
    """Post a user turn; the same Idempotency-Key always answers the same turn."""
    pool, kafka, settings = _deps(request)
    key = idempotency_key or str(uuid.uuid4())
    turn_id = ids.turn_id_for(session_id, key)
    blocks = body.blocks()
    async with pool.connection() as conn:
        if await reads.session_deleted(conn, session_id):
            raise Problem(404, "Session not found", f"session {session_id} was deleted")
        cur = await conn.execute(
            "SELECT s.status, t.user_content, s.policy FROM sessions s LEFT JOIN turns t"
            " ON t.turn_id = %s WHERE s.session_id = %s",
            (turn_id, session_id),
        )
        row = await cur.fetchone()
    if row is not None and row[1] is None and row[0] == "expired":
        raise Problem(410, "Session expired", f"session {session_id} expired after its idle TTL")
    if row is not None and row[1] is None and row[0] == "running" and row[2] == "reject":
        raise Problem(
            409,
            "Turn in progress",
            f"session {session_id} is running a turn and its policy is reject; retry when it ends",
        )
    if row is not None and row[1] is not None and row[1] != blocks:
        raise Problem(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with another body",
            field="Idempotency-Key",
        )
    appends: list[ev.Event] = []
    if row is None:
        appends.append(
            ev.session_started(
                session_id,
                model=body.model or settings.default_model,
                system=body.system,
                metadata=body.metadata,
                policy=body.policy or "enqueue",
                max_steps=body.max_steps or settings.max_steps,
                token_budget=body.token_budget,
                tools=body.tools,
                approvals=body.approvals if body.approvals is not None else settings.approval_tools,
                ttl_s=body.ttl_seconds or settings.session_ttl_s,
                subagent_mode=settings.subagent_mode,
                subagent_timeout_s=settings.subagent_timeout_s,
                subagent_attempts=settings.subagent_attempts,
                max_subagents=settings.max_subagents,
                max_depth=settings.subagent_max_depth,
                max_tokens=body.max_tokens or settings.max_tokens,
            )
        )
    request_hash = hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()
    appends.append(
        ev.user_message(session_id, content=blocks, idempotency_key=key, request_hash=request_hash)
    )
    await kafka.append_many(appends)
    headers = {"Location": f"/v1/sessions/{session_id}/turns/{turn_id}", "Idempotency-Key": key}
    if wait > 0:
        done = await _wait_for_turn(pool, session_id, turn_id, wait)
        if done is not None:
            return JSONResponse(done, status_code=200, headers=headers)
    accepted = TurnAccepted(session_id=session_id, turn_id=turn_id, idempotency_key=key, status="accepted")
    return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)


async def _wait_for_turn(pool: Any, session_id: str, turn_id: str, wait: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        async with pool.connection() as conn:
            turn = await reads.turn_view(conn, session_id, turn_id)
        if turn is not None and turn["status"] in ("completed", "failed"):
            return turn
        if time.monotonic() + delay > deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


@router.get("/sessions/{session_id}", responses={404: PROBLEM})
async def get_session(request: Request, session_id: SessionId) -> dict[str, Any]:
    """A session: its messages and metadata (model, turns, tokens, cost, times)."""
    pool, _, _ = _deps(request)
    async with pool.connection() as conn:
        view = await reads.session_view(conn, session_id)
    if view is None:
        raise Problem(404, "Session not found", f"no session {session_id}")
    return view


@router.get("/sessions/{session_id}/turns/{turn_id}", responses={404: PROBLEM})
async def get_turn(
    request: Request, session_id: SessionId, turn_id: Annotated[str, Path(max_length=200)]
) -> dict[str, Any]:
    """One turn: status, the assistant's answer, usage and cost."""
    pool, _, _ = _deps(request)
    async with pool.connection() as conn:
        turn = await reads.turn_view(conn, session_id, turn_id)
    if turn is None:
        raise Problem(404, "Turn not found", f"no turn {turn_id} in session {session_id}")
    return turn


@router.get("/sessions/{session_id}/events", responses={404: PROBLEM})
async def get_events(
    request: Request,
    session_id: SessionId,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A session's events after sequence number `after`, oldest first."""
    pool, _, _ = _deps(request)
    async with pool.connection() as conn:
        if not await reads.session_exists(conn, session_id):
            raise Problem(404, "Session not found", f"no session {session_id}")
        return await reads.events_page(conn, session_id, after, limit)


@router.delete("/sessions/{session_id}", status_code=202, responses={404: PROBLEM})
async def delete_session(request: Request, session_id: SessionId) -> JSONResponse:
    """Delete a session: its rows leave every table and the ledger; later posts answer 404."""
    pool, kafka, _ = _deps(request)
    async with pool.connection() as conn:
        if await reads.session_deleted(conn, session_id):
            return JSONResponse({"session_id": session_id, "status": "deleted"}, status_code=202)
        cur = await conn.execute("SELECT tenant_id FROM sessions WHERE session_id = %s", (session_id,))
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, "Session not found", f"no session {session_id}")
    await kafka.append(
        ev.SessionDeleted(
            event_id=ids.derive(ids.event_key(session_id, "session_deleted")),
            session_id=session_id,
            tenant_id=row[0],
            occurred_at=ev.now(),
        )
    )
    return JSONResponse({"session_id": session_id, "status": "deleting"}, status_code=202)


class Decision(BaseModel):
    """A human's answer to a tool call waiting for approval."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str | None = Field(default=None, max_length=2000, description="told to the model on deny")


@router.get("/sessions/{session_id}/approvals", responses={404: PROBLEM})
async def list_approvals(
    request: Request,
    session_id: SessionId,
    status: Annotated[Literal["pending", "approved", "denied", "expired"] | None, Query()] = None,
) -> dict[str, Any]:
    """A session's approvals, oldest first (`?status=pending` for those waiting)."""
    pool, _, _ = _deps(request)
    async with pool.connection() as conn:
        if not await reads.session_exists(conn, session_id):
            raise Problem(404, "Session not found", f"no session {session_id}")
        return {"data": await reads.approvals(conn, session_id, status)}


@router.post(
    "/sessions/{session_id}/approvals/{approval_id}",
    status_code=202,
    responses={404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
async def decide_approval(
    request: Request,
    session_id: SessionId,
    approval_id: Annotated[str, Path(max_length=200)],
    body: Decision,
) -> JSONResponse:
    """Approve or deny a waiting tool call; the turn goes on (a denial is an error result)."""
    pool, kafka, _ = _deps(request)
    async with pool.connection() as conn:
        found = await reads.approval(conn, session_id, approval_id)
    if found is None:
        raise Problem(404, "Approval not found", f"no approval {approval_id} in session {session_id}")
    if found["status"] != "pending":
        raise Problem(409, "Approval already closed", f"approval {approval_id} is {found['status']}")
    await kafka.append(
        ev.approval_decided(
            session_id,
            tenant_id=found["tenant_id"],
            turn_id=found["turn_id"],
            step=found["step"],
            approval_id=approval_id,
            tool_use_id=found["tool_use_id"],
            approved=body.decision == "approve",
            reason=body.reason,
        )
    )
    return JSONResponse({"approval_id": approval_id, "decision": body.decision}, status_code=202)
