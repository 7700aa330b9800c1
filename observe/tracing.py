"""Traces: one per turn, across processes, following the OpenTelemetry GenAI conventions.

The api's request span is the root; its W3C `traceparent` rides in the user message's
envelope (and in the Kafka record's headers). The turn's `invoke_agent` span has an id
derived from the turn, so every process can parent to it before it exists: the reactor
stamps it on the turn's events, the model worker's `chat {model}` and the executor's
`execute_tool {name}` spans are its children, and the reactor records the span itself,
with the turn's start and end times, when the turn ends.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from eventstore.events import Event
from eventstore.state import SessionState
from observe.metrics import version

PROVIDER_NAME = "anthropic"
E = TypeVar("E", bound=Event)
_FORCED_SPAN_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("forced_span_id", default=None)
_FORCED_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("forced_trace_id", default=None)


class _Ids(RandomIdGenerator):
    """Random ids, except where a span's id is derived from its cause (the turn's span)."""

    def generate_span_id(self) -> int:
        forced = _FORCED_SPAN_ID.get()
        return forced if forced is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _FORCED_TRACE_ID.get()
        return forced if forced is not None else super().generate_trace_id()


_provider: TracerProvider | None = None


def configure(otlp_endpoint: str = "", extra: SpanProcessor | None = None) -> TracerProvider:
    """Install this process's tracer provider (once): OTLP/HTTP export when an endpoint is
    given, and `extra` (tests add an in-memory exporter). Later calls add `extra` only."""
    global _provider
    if _provider is None:
        resource = Resource.create({"service.name": "agentlog", "service.version": version()})
        provider = TracerProvider(resource=resource, id_generator=_Ids())
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _provider = provider
    if extra is not None:
        _provider.add_span_processor(extra)
    return _provider


def tracer() -> trace.Tracer:
    """The agentlog tracer (a no-op one until `configure`)."""
    return trace.get_tracer("agentlog", version())


def traceparent(ctx: SpanContext) -> str | None:
    """The W3C traceparent of a span context (None when it is not valid)."""
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current() -> str | None:
    """The traceparent of the current span, if any."""
    return traceparent(trace.get_current_span().get_span_context())


def parse(value: str | None) -> SpanContext | None:
    """A remote span context from a traceparent, or None for a missing or malformed one."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        ctx = SpanContext(int(parts[1], 16), int(parts[2], 16), True, TraceFlags(int(parts[3], 16) & 1))
    except ValueError:
        return None
    return ctx if ctx.is_valid else None


def context_of(value: str | None) -> Context | None:
    """An OpenTelemetry context whose parent is the span a traceparent names."""
    ctx = parse(value)
    return trace.set_span_in_context(NonRecordingSpan(ctx)) if ctx is not None else None


def _derived(*parts: str, bits: int) -> int:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def turn_traceparent(session_id: str, turn_id: str, cause: str | None) -> str:
    """The traceparent of a turn's `invoke_agent` span: in the trace of the message that
    asked for it (`cause`), or one derived from the turn; the span id derived from the turn."""
    parent = parse(cause)
    trace_id = parent.trace_id if parent is not None else _derived("trace", session_id, turn_id, bits=128)
    span_id = _derived("invoke_agent", session_id, turn_id, bits=64)
    # Sampled as the cause was (a caller's "not sampled" leaves the whole turn out).
    sampled = int(parent.trace_flags.sampled) if parent is not None else 1
    return f"00-{trace_id:032x}-{span_id:016x}-{sampled:02x}"


def in_turn_trace(state: SessionState, event: E) -> E:
    """An event of a turn, carrying the turn's trace context (its `invoke_agent` span)."""
    turn = state.turn(event.turn_id) if event.turn_id else None
    if turn is None or event.traceparent is not None:
        return event
    parent = turn_traceparent(state.session_id, turn.turn_id, turn.traceparent)
    return cast(E, event.model_copy(update={"traceparent": parent}))


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def record_turn(
    session_id: str,
    turn_id: str,
    cause: str | None,
    started: datetime,
    ended: datetime,
    attributes: dict[str, Any],
    error: str | None,
) -> None:
    """Record a turn's `invoke_agent` span, with the ids every process parented to."""
    own = parse(turn_traceparent(session_id, turn_id, cause))
    assert own is not None
    tokens = (_FORCED_SPAN_ID.set(own.span_id), _FORCED_TRACE_ID.set(own.trace_id))
    try:
        span = tracer().start_span(
            "invoke_agent",
            context=context_of(cause) or Context(),
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": PROVIDER_NAME,
                **attributes,
            },
            start_time=_ns(started),
        )
    finally:
        _FORCED_SPAN_ID.reset(tokens[0])
        _FORCED_TRACE_ID.reset(tokens[1])
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
        span.set_attribute("error.type", "turn_failed")
    span.end(end_time=_ns(ended))


@contextmanager
def child_span(name: str, parent: str | None, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
    """A span under the one `parent` names (a new trace without one)."""
    with tracer().start_as_current_span(
        name, context=context_of(parent) or Context(), kind=kind, attributes=attributes
    ) as span:
        yield span
