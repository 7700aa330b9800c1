"""The pure reactor: what must follow a session's state. No I/O, no clock (time is passed in).

Reactions are derived from the state, not from the event alone, so they are idempotent:
once the reactor has folded its own reactions, the same state asks for nothing more, and
every reaction has a deterministic id, so a reaction appended twice is one event.
"""

from __future__ import annotations

from datetime import datetime

from eventstore import events as ev
from eventstore import ids
from eventstore.state import SessionState, Turn, evolve

TERMINAL_STOPS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "refusal", "model_context_window_exceeded"}
)


def model_request(state: SessionState, turn: Turn, step: int, at: datetime) -> ev.ModelRequested:
    return ev.ModelRequested(
        event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, step, "model_requested", 0)),
        session_id=state.session_id,
        tenant_id=state.tenant_id,
        turn_id=turn.turn_id,
        step=step,
        correlation_id=turn.turn_id,
        occurred_at=at,
        payload=ev.ModelRequestedPayload(model=state.model or "agentlog-offline-1"),
    )


def _start_next(state: SessionState, at: datetime) -> list[ev.Event]:
    queued = state.queued()
    if state.current_turn is not None or not queued or state.status == "deleted":
        return []
    turn = queued[0]
    started = ev.TurnStarted(
        event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, "turn_started")),
        session_id=state.session_id,
        tenant_id=state.tenant_id,
        turn_id=turn.turn_id,
        correlation_id=turn.turn_id,
        occurred_at=at,
    )
    return [started, model_request(state, turn.model_copy(update={"status": "running"}), 1, at)]


def _finish(state: SessionState, turn: Turn, at: datetime) -> list[ev.Event]:
    if turn.model_pending or turn.stop_reason not in TERMINAL_STOPS:
        return []
    return [
        ev.TurnCompleted(
            event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, "turn_completed")),
            session_id=state.session_id,
            tenant_id=state.tenant_id,
            turn_id=turn.turn_id,
            step=turn.step,
            correlation_id=turn.turn_id,
            occurred_at=at,
            payload=ev.TurnCompletedPayload(stop_reason=turn.stop_reason),
        )
    ]


def react(state: SessionState, at: datetime) -> list[ev.Event]:
    """The events that must follow this state now (empty when it waits on an effect)."""
    if state.current_turn is None:
        return _start_next(state, at)
    turn = state.turn(state.current_turn)
    if turn is None:
        return []
    if turn.step == 0:
        return [model_request(state, turn, 1, at)]
    return _finish(state, turn, at)


def settle(state: SessionState, at: datetime, limit: int = 16) -> tuple[SessionState, list[ev.Event]]:
    """React until the state asks for nothing more; returns the state with the reactions folded.

    A reaction can enable another (a turn's completion starts the next queued turn), and the
    reactor will see its own reactions again only as duplicates, so it settles them at once.
    """
    out: list[ev.Event] = []
    for _ in range(limit):
        reactions = react(state, at)
        if not reactions:
            return state, out
        for reaction in reactions:
            state = evolve(state, reaction)
        out += reactions
    raise RuntimeError(f"reactor did not settle after {limit} rounds for session {state.session_id}")
