"""Sessions of real tool turns made by the pure core alone: no broker, no model call, no tool run.

Each turn is what the runtime records for `call Echo {...}`: user message, turn start, model
request, the assistant asking for Echo, tool request, tool result, model request, the answer,
turn completed (nine events), decided by the reactor and answered by the offline model's
pure `answer` and an Echo result, so benchmarks project and replay the real mix of events.
"""

from __future__ import annotations

import json

from eventstore import events as ev
from eventstore.state import SessionState, empty, evolve
from processors.model import results
from processors.model.offline import OFFLINE_MODEL, answer
from processors.model.port import ModelRequest
from processors.reactor import settle

EVENTS_PER_TURN = 9


def _effect(state: SessionState, request: ev.Event, window: int | None) -> list[ev.Event]:
    """What an effect worker would append for a request (nothing for other events)."""
    if isinstance(request, ev.ModelRequested):
        shown = state.messages[-window:] if window else state.messages
        call = ModelRequest(
            model=request.payload.model,
            system=state.config.system,
            messages=[m.as_api() for m in shown],
            max_tokens=state.config.max_tokens,
        )
        return [results.answered(request, answer(call), ev.now())]
    if isinstance(request, ev.ToolRequested):
        text = str(request.payload.input.get("text", ""))
        return [
            ev.tool_result(
                request.session_id,
                turn_id=request.turn_id,
                step=request.step,
                tool_use_id=request.payload.tool_use_id,
                content=text,
                tenant_id=request.tenant_id,
                causation_id=request.event_id,
            )
        ]
    return []


def tool_session(session_id: str, turns: int, window: int | None = None) -> list[ev.Event]:
    """A session started and then `turns` one-tool turns, in log order (1 + 9 x turns events).

    With a `window` the model is shown only the latest messages (its answer depends on the
    last one), so that a long session is made in time linear in its length.
    """
    first = ev.session_started(session_id, model=OFFLINE_MODEL)
    state = evolve(empty(session_id), first)
    log: list[ev.Event] = [first]
    for t in range(turns):
        text = f"call Echo {json.dumps({'text': f'result {t} of {session_id}'})}"
        pending: list[ev.Event] = [ev.user_message(session_id, text=text, idempotency_key=f"t{t}")]
        while pending:
            event = pending.pop(0)
            state = evolve(state, event)
            log.append(event)
            state, reactions = settle(state, ev.now())
            log += reactions
            for reaction in reactions:
                pending += _effect(state, reaction, window)
        if state.turns[-1].status != "completed":
            raise RuntimeError(f"synthetic turn {t} of {session_id} ended {state.turns[-1].status}")
    return log


def sessions_of(total_events: int, per_session: int, prefix: str) -> list[list[ev.Event]]:
    """About `total_events` events as sessions of about `per_session` events each."""
    turns = max(1, (per_session - 1) // EVENTS_PER_TURN)
    count = max(1, round(total_events / (1 + turns * EVENTS_PER_TURN)))
    return [tool_session(f"{prefix}{i}", turns) for i in range(count)]
