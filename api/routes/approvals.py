"""Approvals under /v1: tool calls that wait for a human, and the human's decision."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import scope
from api.auth import Tenant
from api.models import ApprovalList
from api.problems import Problem
from api.routes.common import AUTH, PROBLEM, SessionId, deps, no_nul, owned_session
from eventstore import events as ev
from eventstore import ids, reads

router = APIRouter(prefix="/v1", tags=["approvals"])


class Decision(BaseModel):
    """A human's answer to a tool call waiting for approval."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str | None = Field(default=None, max_length=2000, description="told to the model on deny")

    @field_validator("reason")
    @classmethod
    def _recordable(cls, value: str | None) -> str | None:
        no_nul(value)
        return value


Status = Literal["pending", "approved", "denied", "expired"]


@router.get("/approvals", response_model=ApprovalList, responses={**AUTH})
async def list_tenant_approvals(
    request: Request,
    tenant: Tenant,
    status: Annotated[Status | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The tenant's approvals across its sessions, oldest first (`?status=pending`: the inbox)."""
    pool, _, _ = deps(request)
    async with scope.connection(pool, tenant) as conn:
        found = await reads.tenant_approvals(conn, tenant, status, limit)
    return {"data": scope.client_ids(tenant, found)}


@router.get("/sessions/{session_id}/approvals", response_model=ApprovalList, responses={**AUTH, 404: PROBLEM})
async def list_approvals(
    request: Request,
    session_id: SessionId,
    tenant: Tenant,
    status: Annotated[Status | None, Query()] = None,
) -> dict[str, Any]:
    """A session's approvals, oldest first (`?status=pending` for those waiting)."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        found = await reads.approvals(conn, sid, status)
    return {"data": scope.client_ids(tenant, found)}


@router.post(
    "/sessions/{session_id}/approvals/{approval_id}",
    status_code=202,
    responses={**AUTH, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
async def decide_approval(
    request: Request,
    session_id: SessionId,
    approval_id: Annotated[str, Path(max_length=200)],
    body: Decision,
    tenant: Tenant,
) -> JSONResponse:
    """Approve or deny a waiting tool call; the turn goes on (a denial is an error result).
    The first decision holds: a later one is 409 once the first is recorded."""
    pool, kafka, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    async with owned_session(pool, tenant, sid) as conn:
        found = await reads.approval(conn, sid, approval_id)
    if found is None:
        raise Problem(404, "Approval not found", f"no approval {approval_id} in session {session_id}")
    if found["status"] != "pending":
        raise Problem(409, "Approval already closed", f"approval {approval_id} is {found['status']}")
    await kafka.append(
        ev.approval_decided(
            sid,
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
