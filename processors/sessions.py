"""The session cache of a worker: the states of the sessions it has seen lately, loaded on
demand and bounded.

A session's state is loaded the first time one of its events arrives (or a timer or a
restart asks for it): its events from Postgres — every older log epoch, and this epoch
below the offset being read, which the projector has written — then folded from the log
onwards. Nothing replays the whole log, so start-up and memory do not grow with history.
The cache holds at most `max_sessions` states and about `max_bytes`; the least recently
used state is dropped once everything it folded is in Postgres (below the projector's
position), so loading it again gives the same state. Expired and deleted sessions keep
only their id, tenant and turn ids (bounded the same way), so that a late message to them
is still answered (with a failure) and old copies change nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from itertools import islice

from eventstore import codec, store
from eventstore import events as ev
from eventstore.events import Event
from eventstore.log import partition_for
from eventstore.state import CLOSED, SessionState, Turn, empty, evolve, fold, put_turn

# Memory of a folded session per event, measured (issue 13: about 1–1.4 KB per event).
EVENT_BYTES = 1400
# The projector's positions are read again at most this often when a state must go.
REFRESH_S = 1.0
# How many of the least recently used states one trim looks at.
SCAN = 64


class SessionCache:
    """Folded states by session id, for the sessions of the partitions this worker reads."""

    def __init__(
        self,
        conn: store.AsyncConn,
        epoch: str,
        *,
        partitions: int = 1,
        max_sessions: int = 10_000,
        max_bytes: int = 512 * 1024**2,
        position: Callable[[int], int] | None = None,
    ) -> None:
        self.conn = conn
        self.epoch = epoch
        self.partitions = partitions
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        # The next offset the worker reads per partition: a load takes what lies below it.
        self.position = position or (lambda partition: 0)
        self.states: OrderedDict[str, SessionState] = OrderedDict()  # least recently used first
        self.closed: OrderedDict[str, tuple[str, str, set[str]]] = OrderedDict()
        # The last log offset folded into each cached state (absent: loaded from Postgres only).
        self.folded: dict[str, int] = {}
        self.projected: dict[int, int] = {}
        self.projected_at = float("-inf")
        self.events = 0  # events held by the cached states
        self.loads = 0
        self.evictions = 0

    def peek(self, session_id: str) -> SessionState | None:
        """The cached state, if the session is in the cache (no load)."""
        return self.states.get(session_id)

    def partition(self, session_id: str) -> int:
        """The partition of a session's events."""
        return partition_for(session_id, self.partitions)

    async def get(self, session_id: str, before: int | None = None) -> SessionState:
        """The session's state, loaded from Postgres if it is not cached: every older epoch and
        this epoch's events below `before` (default: the worker's position in its partition)."""
        state = self.states.get(session_id)
        if state is not None:
            self.states.move_to_end(session_id)
            return state
        if session_id in self.closed:
            self.closed.move_to_end(session_id)
            status, tenant, _ = self.closed[session_id]
            return empty(session_id).model_copy(update={"status": status, "tenant_id": tenant})
        bound = self.position(self.partition(session_id)) if before is None else before
        history = await store.session_events(self.conn, session_id, epoch=self.epoch, before=bound)
        self.loads += 1
        if session_id in self.states or session_id in self.closed:
            # Loaded (and perhaps folded further) by someone else while this load waited on
            # Postgres: that state is the worker's; this one may lack what it folded since.
            return await self.get(session_id, before)
        state = fold(session_id, history) if history else empty(session_id)
        if state.status in CLOSED:
            self._close(state)
        else:
            self._keep(state)
        return state

    async def read(self, session_id: str) -> SessionState:
        """A session of another replica's partition, as Postgres holds it now (not cached: its
        owner folds it; this is for a look across partitions, such as a child's end)."""
        state = self.states.get(session_id)
        if state is not None:
            return state
        self.loads += 1
        history = await store.session_events(self.conn, session_id)
        return fold(session_id, history) if history else empty(session_id)

    async def apply(self, event: Event, offset: int | None = None) -> tuple[SessionState, bool]:
        """Fold one event read at `offset`; returns the new state and whether the event was new."""
        sid = event.session_id
        if sid not in self.states and sid not in self.closed:
            await self.get(sid, before=offset)
        if sid in self.closed:
            self.closed.move_to_end(sid)
            return self._late(event)
        before = self.states[sid]
        after = evolve(before, event)
        if offset is not None:
            self.folded[sid] = offset
        if after.status in CLOSED:
            self._close(after)
        elif after is not before:
            self._keep(after)
        else:
            self.states.move_to_end(sid)
        await self.trim()
        return after, after is not before

    def _keep(self, state: SessionState) -> None:
        old = self.states.get(state.session_id)
        self.events += state.event_count - (old.event_count if old is not None else 0)
        self.states[state.session_id] = state
        self.states.move_to_end(state.session_id)

    def _drop(self, session_id: str) -> None:
        old = self.states.pop(session_id, None)
        if old is not None:
            self.events -= old.event_count
        self.folded.pop(session_id, None)

    def _close(self, state: SessionState) -> None:
        """Keep who a closed session was and which turns it had, not its state."""
        self._drop(state.session_id)
        self.closed[state.session_id] = (state.status, state.tenant_id, {t.turn_id for t in state.turns})
        while len(self.closed) > self.max_sessions:
            self.closed.popitem(last=False)  # loaded again from Postgres if it is ever needed

    def forget(self, partitions: set[int]) -> None:
        """Drop every state of the given partitions (handed to another replica, which loads
        them from Postgres; if they come back, so does this cache)."""
        for sid in [sid for sid in self.states if self.partition(sid) in partitions]:
            self._drop(sid)
        for sid in [sid for sid in self.closed if self.partition(sid) in partitions]:
            del self.closed[sid]

    def over(self) -> bool:
        """Whether the cache holds more than its bounds."""
        return len(self.states) > self.max_sessions or self.events * EVENT_BYTES > self.max_bytes

    async def trim(self) -> None:
        """Drop least recently used states while over the bounds, those whose every folded
        event is projected (called after each event, and by the worker when idle)."""
        if not self.over():
            return
        if time.monotonic() - self.projected_at > REFRESH_S:
            self.projected = await store.load_offsets(self.conn, "projector", self.epoch, codec.EVENTS_TOPIC)
            self.projected_at = time.monotonic()
        # The least recently used first, a bounded few per call: while the projector lags, a
        # full walk on every event would cost as much as the cache holds.
        for sid in list(islice(self.states, SCAN)):
            if not self.over():
                return
            last = self.folded.get(sid)
            if last is None or last < self.projected.get(self.partition(sid), 0):
                self._drop(sid)  # all it folded is in Postgres: a later load gives it back
                self.evictions += 1

    def _late(self, event: Event) -> tuple[SessionState, bool]:
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
        state = empty(event.session_id)
        state = state.model_copy(
            update={"status": status, "tenant_id": tenant, "turns": put_turn(state.turns, refused)}
        )
        return state, True
