"""The session cache of a worker: states folded from the log, seeded from older log epochs.

A session first seen in this log epoch starts from its events of older epochs, read from
Postgres (the embedded broker forgets its log on restart; Postgres does not). Expired and
deleted sessions are not kept: only their id and the turn ids they had remain, so that a
late message to them is still answered (with a failure) and old copies change nothing.
"""

from __future__ import annotations

from eventstore import events as ev
from eventstore import store
from eventstore.events import Event
from eventstore.state import CLOSED, SessionState, Turn, empty, evolve, fold, put_turn


class SessionCache:
    """Folded states by session id, for the sessions of the partitions this worker reads."""

    def __init__(self, conn: store.AsyncConn, epoch: str) -> None:
        self.conn = conn
        self.epoch = epoch
        self.states: dict[str, SessionState] = {}
        self.closed: dict[str, tuple[str, str, set[str]]] = {}

    async def get(self, session_id: str) -> SessionState:
        """The session's state, loading its older epochs from Postgres on first use."""
        state = self.states.get(session_id)
        if state is None:
            older = await store.session_events(self.conn, session_id, exclude_epoch=self.epoch)
            state = fold(session_id, older) if older else empty(session_id)
            self.states[session_id] = state
        return state

    async def apply(self, event: Event) -> tuple[SessionState, bool]:
        """Fold one event; returns the new state and whether the event was new."""
        if event.session_id in self.closed:
            return self._closed(event)
        before = await self.get(event.session_id)
        after = evolve(before, event)
        if after.status in CLOSED:
            # Drop the state: keep who it was and which turns it had.
            del self.states[event.session_id]
            self.closed[event.session_id] = (after.status, after.tenant_id, {t.turn_id for t in after.turns})
            return after, after is not before
        self.states[event.session_id] = after
        return after, after is not before

    def _closed(self, event: Event) -> tuple[SessionState, bool]:
        """A closed session sees only late user messages: a state holding that one refused turn."""
        status, tenant, turns = self.closed[event.session_id]
        if not isinstance(event, ev.UserMessage) or event.turn_id is None or event.turn_id in turns:
            return empty(event.session_id).model_copy(update={"status": status}), False
        turns.add(event.turn_id)
        refused = Turn(
            turn_id=event.turn_id,
            status="queued",
            user_content=tuple(event.payload.content),
            refused=f"session {status}",
        )
        blank = empty(event.session_id)
        state = blank.model_copy(
            update={"status": status, "tenant_id": tenant, "turns": put_turn(blank.turns, refused)}
        )
        return state, True
