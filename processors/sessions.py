"""The session cache of a worker: states folded from the log, seeded from older log epochs.

A session first seen in this log epoch starts from its events of older epochs, read from
Postgres (the embedded broker forgets its log on restart; Postgres does not).
"""

from __future__ import annotations

from eventstore import store
from eventstore.events import Event
from eventstore.state import SessionState, empty, evolve, fold


class SessionCache:
    """Folded states by session id, for the sessions of the partitions this worker reads."""

    def __init__(self, conn: store.AsyncConn, epoch: str) -> None:
        self.conn = conn
        self.epoch = epoch
        self.states: dict[str, SessionState] = {}

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
        before = await self.get(event.session_id)
        after = evolve(before, event)
        self.states[event.session_id] = after
        return after, after is not before
