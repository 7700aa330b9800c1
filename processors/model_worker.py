"""The model worker: serves model requests with many in flight, appends assistant messages.

Requests of different sessions run concurrently; a session has one request at a time (the
reactor asks for the next step only after the result). Each call's outcome is recorded in
the ledger under session/turn/step before it is appended, so a redelivered request
re-emits the recorded answer and calls nothing. It serves the reactor's compaction requests
the same way (the summary call under its own key), and sends every call the session's
compacted view (eventstore/context.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from eventstore import channels, context, ledger, untrusted
from eventstore import events as ev
from eventstore.events import Event
from eventstore.pricing import priced_as
from eventstore.state import SessionState
from observe import tracing
from processors import reactor
from processors.effects import EffectWorker
from processors.model import results
from processors.model.port import ModelClient, ModelError, ModelRequest, ModelResponse
from processors.tools import mcp
from processors.tools.errors import McpUnavailable
from processors.tools.registry import Registry, default_registry

log = logging.getLogger(__name__)


class Deltas:
    """Text as the model streams it, to live views (Postgres NOTIFY; lost on a crash, by
    design), sent beside the stream rather than in it: `add` never waits, so a slow or busy
    database never holds up a model's stream; text that arrives while a notification is on
    its way goes out with the next one, so a fast stream costs a few round trips, not one per
    token. `drain` waits for what was added (before the call's answer is appended, so a live
    view sees the pieces before the message); `cancel` drops it."""

    def __init__(self, send: Callable[[str], Awaitable[None]], head: dict[str, Any]) -> None:
        self._send = send
        self._head = head
        self._pending: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # notifications sent

    def add(self, text: str) -> None:
        """Queue a piece of text; sent now if nothing is on its way, else with the next."""
        if not text:
            return
        self._pending.append(text)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            for payload in channels.delta_payloads(self._head, text):
                try:
                    await self._send(payload)
                    self.sent += 1
                except Exception:  # a live view is best effort: the call goes on
                    log.debug("text delta not pushed", exc_info=True)

    async def drain(self) -> None:
        """Wait until everything added was sent (or failed to be)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def cancel(self) -> None:
        """Drop what is not sent yet."""
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()


Request = ev.ModelRequested | ev.CompactionRequested
Billed = ev.AssistantMessagePayload | ev.ContextCompactedPayload


def _billed(outcome: Event) -> Billed | None:
    """The payload of an outcome that is a model call's answer (a message or a summary)."""
    return outcome.payload if isinstance(outcome, ev.AssistantMessage | ev.ContextCompacted) else None


def _no_call(outcome: Event) -> bool:
    """A compaction that only cleared tool results: no model call to describe or count."""
    return isinstance(outcome, ev.ContextCompacted) and outcome.payload.model is None


async def _ready(request: ModelRequest) -> ModelRequest:
    return request


class ModelWorker(EffectWorker[Request]):
    """Effect worker for `model_requested` and `compaction_requested`."""

    consumer = "model-worker"
    kind = "model"

    def __init__(self, *args: Any, model: ModelClient, tools: Registry | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = model
        self.tools = tools or default_registry()
        self.mcp = mcp.Catalog(self.settings)
        self.calls = 0
        # Names already warned about (unpriced, deprecated): one log line each, bounded.
        self.flagged: set[tuple[str, str]] = set()
        self.lease_s = self.settings.model_lease_s

    def request(self, event: Event) -> Request | None:
        return event if isinstance(event, ev.ModelRequested | ev.CompactionRequested) else None

    def key(self, request: Request) -> str:
        if isinstance(request, ev.CompactionRequested):
            return ledger.compaction_key(request.session_id, request.turn_id, request.step)
        return ledger.model_key(request.session_id, request.turn_id, request.step)

    def pending(self, request: Request, state: SessionState) -> bool:
        turn = state.turn(request.turn_id)
        if (
            turn is None
            or turn.status != "running"
            or turn.interrupted
            or state.status in ("expired", "deleted")
        ):
            return False
        if isinstance(request, ev.CompactionRequested):
            return (
                state.compacting(turn.turn_id)
                and state.compaction is not None
                and state.compaction.event_id == request.event_id
            )
        return turn.model_pending and turn.step == request.step

    def unanswered(self, state: SessionState) -> list[Request]:
        turn = state.turn(state.current_turn)
        if turn is not None and state.compacting(turn.turn_id) and state.compaction is not None:
            return [state.compaction]
        if turn is None or not turn.model_pending:
            return []
        return [reactor.model_request(state, turn, turn.step, ev.now())]

    def unrecordable(self, request: Request, reason: str) -> Event:
        return results.failed(request, f"model call failed: {reason}", ev.now())

    def model_request(
        self,
        request: ev.ModelRequested,
        state: SessionState,
        offer: mcp.Offer | None = None,
        deltas: Deltas | None = None,
    ) -> ModelRequest:
        """The Messages API request of a step: the conversation so far and the session's tools
        (the built-in and users' ones, then those of its MCP servers)."""
        return ModelRequest(
            model=request.payload.model,
            system=state.config.system,
            # Strangers' content (WebFetch, MCP results) marked as data, in the request only.
            messages=untrusted.marked(context.view(state)),
            tools=self.tools.definitions(state.config.tools)
            + (offer or mcp.Offer(state.mcp_tools or ())).definitions(),
            max_tokens=context.max_tokens(state),
            key=self.key(request),
            on_text=self._first_text(request, deltas),
        )

    def _first_text(self, request: Request, then: Deltas | None) -> Callable[[str], Awaitable[None]]:
        """Measures the time to the first text, then passes the text on (if anyone listens)."""
        started = time.monotonic()
        first = True

        async def on_text(text: str) -> None:
            nonlocal first
            if first:
                first = False
                self.metrics.model_ttft.labels(self.model_label(request.payload.model)).observe(
                    time.monotonic() - started
                )
            if then is not None:
                then.add(text)

        return on_text

    def model_label(self, model: str) -> str:
        """The model as a metric label: a priced (known) model, else `other` (names are user input)."""
        return priced_as(model, self.settings.prices) or "other"

    def flag_once(self, kind: str, model: str, message: str, *args: Any) -> None:
        """Log a warning about a model the first time it is seen (at most 1,000 names)."""
        if (kind, model) in self.flagged or len(self.flagged) >= 1000:
            return
        self.flagged.add((kind, model))
        log.warning(message, *args)

    def span(self, request: Request) -> tuple[str, SpanKind, dict[str, Any]]:
        model = request.payload.model
        return (
            f"chat {self.model_label(model)}",  # the raw name (user input) is an attribute
            SpanKind.CLIENT,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": tracing.PROVIDER_NAME,
                "gen_ai.request.model": model,
                "gen_ai.conversation.id": request.session_id,
                "agentlog.turn_id": request.turn_id or "",
                "agentlog.step": request.step or 0,
            },
        )

    def describe(self, span: Span, outcome: Event) -> None:
        if _no_call(outcome):
            return
        p = _billed(outcome)
        if p is None:
            reason = outcome.payload.reason if isinstance(outcome, ev.TurnFailed) else outcome.type
            span.set_status(Status(StatusCode.ERROR, reason))
            span.set_attribute("error.type", "model_call_failed")
            return
        stop = p.stop_reason if isinstance(p, ev.AssistantMessagePayload) else "compaction"
        span.set_attributes(
            {
                "gen_ai.response.model": p.model or "",
                "gen_ai.response.finish_reasons": [stop or ""],
                "gen_ai.usage.input_tokens": p.usage.input_tokens,
                "gen_ai.usage.output_tokens": p.usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": p.usage.cache_read_input_tokens,
                "gen_ai.usage.cache_creation.input_tokens": p.usage.cache_creation_input_tokens,
            }
        )
        if p.cost_usd is not None:
            span.set_attribute("agentlog.cost_usd", float(p.cost_usd))

    def measure(self, request: Request, outcome: Event, attempts: int, seconds: float) -> None:
        if _no_call(outcome):
            return
        metrics, model = self.metrics, self.model_label(request.payload.model)
        metrics.model_duration.labels(model).observe(seconds)
        metrics.retries.labels(model).inc(max(0, attempts - 1))
        p = _billed(outcome)
        if p is None:
            metrics.model_calls.labels(model, "error").inc()
            return
        metrics.model_calls.labels(model, "ok").inc()
        usage = p.usage
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            metrics.tokens.labels(model, kind).inc(count)
        if p.cost_usd is not None:
            metrics.cost.labels(model).inc(float(p.cost_usd))
        else:
            metrics.unpriced.inc()
            self.flag_once(
                "unpriced",
                p.model or "",
                "model %r has no price (genai-prices does not know it; AGENTLOG_PRICES can add it):"
                " its calls' cost is unknown (NULL)",
                p.model,
            )

    def _deltas(self, request: Request) -> Deltas | None:
        """Where the call's text goes as it streams (None: nowhere, `stream_deltas` off)."""
        if not self.settings.stream_deltas:
            return None
        head = {"session_id": request.session_id, "turn_id": request.turn_id, "step": request.step}
        return Deltas(lambda payload: self._ledger_call(channels.notify_delta, payload), head)

    async def perform(self, request: Request, state: SessionState) -> tuple[Event, int]:
        if isinstance(request, ev.CompactionRequested):
            return await self._compact(request, state)
        started = time.monotonic()
        offer = mcp.Offer(())
        deltas = self._deltas(request)

        async def build() -> ModelRequest:
            nonlocal offer
            offer = await self.mcp.offer(state)
            return self.model_request(request, state, offer, deltas)

        try:
            response = await self._call(request, build(), "model call failed")
            if deltas is not None:
                await deltas.drain()
        finally:
            if deltas is not None:
                deltas.cancel()
        if not isinstance(response, ModelResponse):
            return response
        took = int((time.monotonic() - started) * 1000)
        if response.deprecated is not None:
            self.metrics.deprecated.labels(self.model_label(request.payload.model)).inc()
            self.flag_once(
                "deprecated",
                request.payload.model,
                "model %r is deprecated (end of life %s): move sessions to a current model",
                request.payload.model,
                response.deprecated,
            )
        answer = results.answered(request, response, ev.now(), took, self.settings.prices or None)
        return offer.recorded(answer), response.attempts

    async def _call(
        self, request: Request, build: Awaitable[ModelRequest], failed: str
    ) -> ModelResponse | tuple[Event, int]:
        """One model call: its response, or the failure that ends the turn, with its attempts
        (`failed` says what failed: the step's call or a compaction's)."""
        self.calls += 1
        self.metrics.model_in_flight.inc()
        try:
            return await self.model.complete(await build)
        except McpUnavailable as exc:
            return results.failed(request, f"model call not made: {exc}", ev.now()), 1
        except ModelError as exc:
            return results.failed(request, f"{failed}: {exc.reason}", ev.now()), exc.attempts
        except Exception as exc:  # an adapter bug must end the turn, not hang it
            log.exception("model adapter raised")
            return results.failed(request, f"{failed}: {type(exc).__name__}: {exc}", ev.now()), 1
        finally:
            self.metrics.model_in_flight.dec()

    async def _compact(self, request: ev.CompactionRequested, state: SessionState) -> tuple[Event, int]:
        """Make the compaction asked for: a summary of the messages it covers (one model call,
        none when only tool results are cleared), with the view's estimate after it."""
        p = request.payload
        started = time.monotonic()
        summary, response = state.summary, None
        got: ModelResponse | tuple[Event, int]
        if p.through > state.compacted_through:
            asked = ModelRequest(
                model=p.model,
                system=context.SUMMARY_SYSTEM,
                messages=context.summary_prompt(state, p.through),
                max_tokens=context.summary_tokens(state),
                key=self.key(request),
            )
            got = await self._call(request, _ready(asked), "compaction failed")
            if not isinstance(got, ModelResponse):
                return got
            response = got
            written = " ".join(str(b.get("text", "")) for b in response.content if b.get("type") == "text")
            summary = context.clip_summary(written.strip() or "(no summary)", state)
        after = context.compacted(state, max(p.through, state.compacted_through), p.clear_before, summary)
        took = int((time.monotonic() - started) * 1000)
        outcome = results.compacted(
            request,
            summary,
            context.request_tokens(after, [], context.overhead(state, self.tools.definition_tokens())),
            response,
            ev.now(),
            took,
            self.settings.prices or None,
        )
        return outcome, response.attempts if response is not None else 1
