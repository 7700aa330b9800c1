"""The events a model call produces, pure: the answer or the failure, with ids derived from the request."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from eventstore import events as ev
from eventstore import ids
from eventstore.pricing import Prices, price_of
from processors.model.port import ModelResponse


def _caused_by(request: ev.ModelRequested | ev.CompactionRequested, at: datetime) -> dict[str, Any]:
    return {
        "session_id": request.session_id,
        "tenant_id": request.tenant_id,
        "turn_id": request.turn_id,
        "step": request.step,
        "causation_id": request.event_id,
        "correlation_id": request.correlation_id,
        "occurred_at": at,
    }


def answered(
    request: ev.ModelRequested,
    response: ModelResponse,
    at: datetime,
    duration_ms: int = 0,
    prices: Prices | None = None,
) -> ev.AssistantMessage:
    """The assistant message answering a model request, priced from its usage at the time of
    the call (`prices` overriding or adding models); the price is stored with the cost."""
    price = price_of(response.model, response.usage, at, prices)
    key = ids.event_key(request.session_id, request.turn_id, request.step, "assistant_message", 0)
    return ev.AssistantMessage(
        event_id=ids.derive(key),
        **_caused_by(request, at),
        payload=ev.AssistantMessagePayload(
            model=response.model,
            content=response.content,
            stop_reason=response.stop_reason,
            usage=response.usage,
            cost_usd=None if price is None else price.cost(response.usage),
            price=price,
            duration_ms=duration_ms,
        ),
    )


def compacted(
    request: ev.CompactionRequested,
    summary: str | None,
    tokens_after: int,
    response: ModelResponse | None,
    at: datetime,
    duration_ms: int = 0,
    prices: Prices | None = None,
) -> ev.ContextCompacted:
    """The compaction a request asked for, made; `response` is the summary call's, if one was
    needed (its usage priced as any model call's)."""
    p = request.payload
    usage, price = ev.Usage(), None
    cost_usd: Decimal | None = Decimal(0)
    if response is not None:  # no summary call (clearing was enough): nothing to pay
        usage = response.usage
        price = price_of(response.model, usage, at, prices)
        cost_usd = None if price is None else price.cost(usage)
    key = ids.event_key(request.session_id, request.turn_id, request.step, "context_compacted")
    return ev.ContextCompacted(
        event_id=ids.derive(key),
        **_caused_by(request, at),
        payload=ev.ContextCompactedPayload(
            model=response.model if response is not None else None,
            through=p.through,
            clear_before=p.clear_before,
            summary=summary,
            tokens_before=p.tokens_before,
            tokens_after=tokens_after,
            usage=usage,
            cost_usd=cost_usd,
            price=price,
            duration_ms=duration_ms,
        ),
    )


def failed(request: ev.ModelRequested | ev.CompactionRequested, reason: str, at: datetime) -> ev.TurnFailed:
    """The turn failure a model call that cannot succeed ends in."""
    return ev.TurnFailed(
        event_id=ids.derive(ids.event_key(request.session_id, request.turn_id, "turn_failed")),
        **_caused_by(request, at),
        payload=ev.TurnFailedPayload(reason=reason),
    )
