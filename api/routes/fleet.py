"""The fleet under /v1: the instances `agentlog top` shows, outliers flagged (read only).

Its figures are every tenant's together, so only the operator tenants
(AGENTLOG_OPERATOR_TENANTS) may read it; any other token is 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.auth import Tenant
from api.models import FleetView
from api.problems import Problem
from api.routes.common import AUTH, PROBLEM, deps
from observe import fleet, instances

router = APIRouter(prefix="/v1", tags=["fleet"])


@router.get("/fleet", response_model=FleetView, responses={**AUTH, 403: PROBLEM})
async def get_fleet(
    request: Request,
    tenant: Tenant,
    within: Annotated[
        float, Query(gt=0, le=3600, description="seconds since an instance's last heartbeat")
    ] = 20.0,
    k: Annotated[float, Query(gt=0, le=100, description="MADs above the median that flag")] = 3.0,
    min_work: Annotated[float, Query(ge=0, description="the least work an instance is compared with")] = 5,
) -> dict[str, Any]:
    """Every live instance's metrics (totals since it started), each role's and the fleet's,
    and the instances that stand out from their role's peers, as `agentlog top` shows them."""
    pool, _, settings = deps(request)
    if tenant not in settings.operator_tenants:
        raise Problem(403, "Forbidden", f"the fleet is shown to the operator tenants only, not to {tenant}")
    async with pool.connection() as conn:
        found = await instances.live(conn, within)
    snap = await fleet.measure(found, fleet.Rules(k=k, min_work=min_work))
    return snap.as_json()
