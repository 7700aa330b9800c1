"""Live events: a session's events as server-sent events, and the model's text as it streams.

Each stored event is sent with `id:` its sequence number, so a client that reconnects with
`Last-Event-ID` (or `?after=`) misses nothing and sees nothing twice. A stream reads when the
process's listener (`api.live`) announces new rows for its session, and every few seconds
anyway; `text_delta` events (no id: ephemeral, never stored) carry a streaming model call's
text, pushed by the model worker through Postgres NOTIFY. Keep-alive comments keep proxies open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api import scope
from api.auth import Tenant
from api.routes.common import AUTH, PROBLEM, SessionId, deps, live_of, require_session
from eventstore import ids, reads

router = APIRouter(prefix="/v1", tags=["events"])

PAGE = 500


async def _owned(request: Request, session_id: SessionId, tenant: Tenant) -> tuple[str, str]:
    """The tenant and the stored session id, once the tenant is known to own it (checked
    before the stream starts, so that a refusal is a 404, not an empty stream)."""
    pool, _, _ = deps(request)
    sid = ids.scoped_session_id(tenant, session_id)
    await require_session(pool, sid, tenant)
    return tenant, sid


def _resume_from(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return after or 0


@router.get(
    "/sessions/{session_id}/events/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the session's events, then live ones"},
        **AUTH,
        404: PROBLEM,
    },
)
async def stream_events(
    request: Request,
    owner: Annotated[tuple[str, str], Depends(_owned)],
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(max_length=30)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """The session's events after `Last-Event-ID` (or `after`), then each new one as it is
    projected, with the model's text deltas in between."""
    pool, _, settings = deps(request)
    tenant, session_id = owner
    live = live_of(request)
    last = _resume_from(last_event_id, after)
    with live.subscribe(session_id, deltas=settings.stream_deltas) as sub:
        next_read = 0.0  # at once
        while not await request.is_disconnected():
            # Deltas first: those of a model call arrived before its answer was announced.
            for delta in sub.take_deltas():
                yield ServerSentEvent(data=delta, event="text_delta")
            if sub.due(last) or time.monotonic() >= next_read:
                next_read = time.monotonic() + live.poll_interval()
                async with scope.connection(pool, tenant) as conn:
                    page = scope.client_ids(tenant, await reads.events_page(conn, session_id, last, PAGE))
                for event in page["data"]:
                    yield ServerSentEvent(data=event, event=event["type"], id=str(event["seq"]))
                    last = event["seq"]
                if page["has_more"]:
                    next_read = 0.0
                    continue
            await sub.wait(next_read - time.monotonic())
