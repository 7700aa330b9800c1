"""The one definition of a session: SessionState, evolve and fold. Pure: no I/O, no clock.

The fold is idempotent: an event whose id was already applied changes nothing, so a log
holding duplicates folds to the same state as one without.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from eventstore import events as ev
from eventstore.events import Block, Event, StopReason, Usage

TurnStatus = Literal["queued", "running", "completed", "failed"]


class Message(BaseModel):
    """One message of the conversation, in the Messages API shape."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    content: tuple[Block, ...]

    def as_api(self) -> dict[str, Any]:
        """The message as the Messages API takes it."""
        return {"role": self.role, "content": list(self.content)}


class Turn(BaseModel):
    """A user turn: queued until it starts, then running until it completes or fails."""

    model_config = ConfigDict(frozen=True)

    turn_id: str
    status: TurnStatus
    user_content: tuple[Block, ...]
    step: int = 0
    model_pending: bool = False
    stop_reason: StopReason | None = None
    error: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)


class SessionState(BaseModel):
    """Everything a session is, folded from its events."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    tenant_id: str = "default"
    model: str | None = None
    system: str | None = None
    metadata: dict[str, Any] = {}
    status: Literal["new", "idle", "running", "deleted"] = "new"
    messages: tuple[Message, ...] = ()
    turns: tuple[Turn, ...] = ()
    current_turn: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
    turn_count: int = 0
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    event_count: int = 0
    seen: frozenset[str] = frozenset()

    def turn(self, turn_id: str | None) -> Turn | None:
        """The turn with this id, if the session has it."""
        for t in self.turns:
            if t.turn_id == turn_id:
                return t
        return None

    def queued(self) -> tuple[Turn, ...]:
        """Turns waiting to start, oldest first."""
        return tuple(t for t in self.turns if t.status == "queued")

    def public(self) -> dict[str, Any]:
        """A JSON-ready view, without the bookkeeping of seen ids."""
        return self.model_dump(mode="json", exclude={"seen"})


def empty(session_id: str) -> SessionState:
    """The state of a session before its first event."""
    return SessionState(session_id=session_id)


def _replace_turn(state: SessionState, turn: Turn) -> tuple[Turn, ...]:
    return tuple(turn if t.turn_id == turn.turn_id else t for t in state.turns)


def _apply(state: SessionState, event: Event) -> SessionState:
    """One branch per event type; the event is known to be new."""
    match event:
        case ev.SessionStarted(payload=p):
            return state.model_copy(
                update={
                    "model": p.model,
                    "system": p.system,
                    "metadata": p.metadata,
                    "tenant_id": event.tenant_id,
                    "status": "idle" if state.status == "new" else state.status,
                    "started_at": state.started_at or event.occurred_at,
                }
            )
        case ev.UserMessage(payload=p):
            assert event.turn_id is not None
            turn = Turn(turn_id=event.turn_id, status="queued", user_content=tuple(p.content))
            return state.model_copy(
                update={
                    "turns": (*state.turns, turn),
                    "tenant_id": event.tenant_id,
                    "status": "running" if state.status != "deleted" else "deleted",
                    "started_at": state.started_at or event.occurred_at,
                }
            )
        case ev.TurnStarted():
            queued = state.turn(event.turn_id)
            if queued is None or queued.status != "queued":
                return state
            turn = queued
            started = turn.model_copy(update={"status": "running"})
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, started),
                    "current_turn": turn.turn_id,
                    "messages": (*state.messages, Message(role="user", content=turn.user_content)),
                    "turn_count": state.turn_count + 1,
                    "status": "running",
                }
            )
        case ev.ModelRequested():
            running = state.turn(event.turn_id)
            if running is None or running.status != "running":
                return state
            pending = running.model_copy(update={"step": event.step or 1, "model_pending": True})
            return state.model_copy(update={"turns": _replace_turn(state, pending)})
        case ev.AssistantMessage(payload=p):
            asked = state.turn(event.turn_id)
            if asked is None or asked.status != "running":
                return state
            answered = asked.model_copy(
                update={
                    "model_pending": False,
                    "stop_reason": p.stop_reason,
                    "usage": asked.usage + p.usage,
                    "cost_usd": asked.cost_usd + p.cost_usd,
                }
            )
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, answered),
                    "messages": (
                        *state.messages,
                        Message(role="assistant", content=tuple(p.content)),
                    ),
                    "usage": state.usage + p.usage,
                    "cost_usd": state.cost_usd + p.cost_usd,
                }
            )
        case ev.TurnCompleted() | ev.TurnFailed():
            open_turn = state.turn(event.turn_id)
            if open_turn is None or open_turn.status in ("completed", "failed"):
                return state
            turn = open_turn
            if isinstance(event, ev.TurnFailed):
                ended = turn.model_copy(
                    update={
                        "status": "failed",
                        "model_pending": False,
                        "error": event.payload.reason,
                    }
                )
            else:
                ended = turn.model_copy(update={"status": "completed", "model_pending": False})
            turns = tuple(ended if t.turn_id == turn.turn_id else t for t in state.turns)
            busy = any(t.status in ("queued", "running") for t in turns)
            return state.model_copy(
                update={
                    "turns": turns,
                    "current_turn": None if state.current_turn == turn.turn_id else state.current_turn,
                    "status": "deleted" if state.status == "deleted" else ("running" if busy else "idle"),
                }
            )
        case ev.SessionDeleted():
            return state.model_copy(update={"status": "deleted"})
        case _:
            # Tool and sub-agent events are folded by the turns issue; counted here.
            return state


def evolve(state: SessionState, event: Event) -> SessionState:
    """The state after one more event; a duplicate (already seen) id changes nothing."""
    key = str(event.event_id)
    if key in state.seen or event.session_id != state.session_id:
        return state
    applied = _apply(state, event)
    return applied.model_copy(
        update={
            "seen": state.seen | {key},
            "event_count": state.event_count + 1,
            "last_activity_at": event.occurred_at
            if state.last_activity_at is None or event.occurred_at > state.last_activity_at
            else state.last_activity_at,
        }
    )


def fold(session_id: str, events: Iterable[Event], start: SessionState | None = None) -> SessionState:
    """Fold events, in log order, into the session's state."""
    state = start or empty(session_id)
    for event in events:
        state = evolve(state, event)
    return state
