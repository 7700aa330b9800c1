"""The model worker: serves model requests with many in flight, appends assistant messages.

Requests of different sessions run concurrently; a session has one request at a time (the
reactor asks for the next step only after the result). Each call's outcome is recorded in
the ledger under session/turn/step before it is appended, so a redelivered request
re-emits the recorded answer and calls nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from eventstore import events as ev
from eventstore import ledger
from eventstore.events import Event
from eventstore.state import SessionState
from processors import reactor
from processors.effects import EffectWorker
from processors.model import results
from processors.model.port import ModelClient, ModelError, ModelRequest
from processors.tools.registry import Registry, default_registry

log = logging.getLogger(__name__)


async def _notify(conn: Any, payload: str) -> None:
    await conn.execute("SELECT pg_notify('agentlog_deltas', %s)", (payload,))


class ModelWorker(EffectWorker[ev.ModelRequested]):
    """Effect worker for `model_requested`."""

    consumer = "model-worker"
    kind = "model"

    def __init__(self, *args: Any, model: ModelClient, tools: Registry | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = model
        self.tools = tools or default_registry()
        self.calls = 0

    def request(self, event: Event) -> ev.ModelRequested | None:
        return event if isinstance(event, ev.ModelRequested) else None

    def key(self, request: ev.ModelRequested) -> str:
        return ledger.model_key(request.session_id, request.turn_id, request.step)

    def pending(self, request: ev.ModelRequested, state: SessionState) -> bool:
        turn = state.turn(request.turn_id)
        return (
            turn is not None
            and turn.status == "running"
            and turn.model_pending
            and not turn.interrupted
            and turn.step == request.step
            and state.status not in ("expired", "deleted")
        )

    def unanswered(self, state: SessionState) -> list[ev.ModelRequested]:
        turn = state.turn(state.current_turn)
        if turn is None or not turn.model_pending:
            return []
        return [reactor.model_request(state, turn, turn.step, ev.now())]

    def unrecordable(self, request: ev.ModelRequested, reason: str) -> Event:
        return results.failed(request, f"model call failed: {reason}", ev.now())

    def model_request(self, request: ev.ModelRequested, state: SessionState) -> ModelRequest:
        """The Messages API request of a step: the conversation so far and the session's tools."""
        return ModelRequest(
            model=request.payload.model,
            system=state.system,
            messages=[m.as_api() for m in state.messages],
            tools=self.tools.definitions(state.tools),
            max_tokens=state.max_tokens,
            key=self.key(request),
            on_text=self._deltas(request) if self.settings.stream_deltas else None,
        )

    def _deltas(self, request: ev.ModelRequested) -> Callable[[str], Awaitable[None]]:
        """Text as the model streams it, to live views (Postgres NOTIFY; lost on a crash, by design)."""

        async def push(text: str) -> None:
            for start in range(0, len(text), 4000):  # NOTIFY payloads stay under 8000 bytes
                payload = json.dumps(
                    {
                        "session_id": request.session_id,
                        "turn_id": request.turn_id,
                        "step": request.step,
                        "text": text[start : start + 4000],
                    }
                )
                try:
                    await self._ledger_call(_notify, payload)
                except Exception:  # a live view is best effort: the call goes on
                    log.debug("text delta not pushed", exc_info=True)

        return push

    async def perform(self, request: ev.ModelRequested, state: SessionState) -> tuple[Event, int]:
        started = time.monotonic()
        self.calls += 1
        try:
            response = await self.model.complete(self.model_request(request, state))
        except ModelError as exc:
            return results.failed(request, f"model call failed: {exc.reason}", ev.now()), 1
        except Exception as exc:  # an adapter bug must end the turn, not hang it
            log.exception("model adapter raised")
            return results.failed(request, f"model call failed: {type(exc).__name__}: {exc}", ev.now()), 1
        took = int((time.monotonic() - started) * 1000)
        return results.answered(
            request, response, ev.now(), took, self.settings.prices or None
        ), response.attempts
