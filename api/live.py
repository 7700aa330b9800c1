"""One LISTEN connection per api process, fanned out to the streams and waits of each session:
projected rows (`agentlog_projected`) wake them, a finished turn (`agentlog_turns`) wakes what
waits for that turn alone, model text deltas (`agentlog_deltas`) are
handed to them, bounded, so a slow reader never holds the listener up nor grows without end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from eventstore import channels

log = logging.getLogger(__name__)

# The listener's connection, as pg_stat_activity names it.
APPLICATION_NAME = "agentlog-api-live"  # the pool's are "agentlog-api"
# A subscriber looks anyway this often, in case a notification was lost...
SAFETY_POLL_S = 5.0
# ...and this often while the listener is not connected.
OUTAGE_POLL_S = 0.5
# Text deltas a subscriber may hold untaken; past it, new ones are dropped for it alone.
DELTA_BUFFER = 256
# An idle listener checks its connection this often (a dead peer shows itself on a query).
HEALTH_CHECK_S = 10.0
BACKOFF_S = (0.1, 5.0)


class Subscription:
    """What one stream or wait knows of its session: the highest last seq announced, whether
    anything may have changed unannounced, and the text deltas not yet taken."""

    def __init__(self, session_id: str, deltas: bool, turn_id: str | None = None) -> None:
        self.session_id = session_id
        self.wants_deltas = deltas
        # Set: it waits for this turn to finish, and the session's other rows do not wake it.
        self.turn_id = turn_id
        self.announced = 0
        self.stale = True  # nothing read yet
        self.dropped = 0
        self._deltas: deque[dict[str, Any]] = deque()
        self._woken = asyncio.Event()

    def projected(self, seq: int | None) -> None:
        """Rows up to `seq` are visible (None: anything may have changed)."""
        if seq is None:
            self.stale = True
        elif seq > self.announced:
            self.announced = seq
            if self.turn_id is not None:
                return  # `finished` wakes it
        else:
            return
        self._woken.set()

    def finished(self) -> None:
        """Its turn finished (its rows are visible)."""
        self.stale = True
        self._woken.set()

    def delta(self, delta: dict[str, Any]) -> None:
        """A text delta for this session; dropped if the buffer is full."""
        if not self.wants_deltas:
            return
        if len(self._deltas) >= DELTA_BUFFER:
            self.dropped += 1
            return
        self._deltas.append(delta)
        self._woken.set()

    def due(self, last: int) -> bool:
        """Whether events after seq `last` may be there to read; resets the stale mark, so
        that a signal arriving during the read that follows is not lost."""
        stale, self.stale = self.stale, False
        return stale or self.announced > last

    def take_deltas(self) -> list[dict[str, Any]]:
        """The deltas received since the last call, oldest first."""
        taken = list(self._deltas)
        self._deltas.clear()
        return taken

    async def wait(self, within: float) -> None:
        """Until something arrives for the session (since the last wait) or `within` seconds pass."""
        if not self._woken.is_set() and within > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), within)
        self._woken.clear()


class Live:
    """The process's listener: start, subscribe per session, stop."""

    def __init__(self, database_url: str, *, deltas: bool = True) -> None:
        self._url = database_url
        self._channels = [channels.PROJECTED, channels.TURNS, *([channels.DELTAS] if deltas else [])]
        self._subs: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.backend_pid: int | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        """Whether notifications are being received now."""
        return self._connected.is_set()

    def poll_interval(self) -> float:
        """How long a subscriber may wait for a signal before it reads anyway."""
        return SAFETY_POLL_S if self.connected else OUTAGE_POLL_S

    async def start(self, within: float = 10.0) -> None:
        """Start listening; waits up to `within` for the first connection (past it, the
        listener keeps trying and subscribers poll meanwhile)."""
        self._task = asyncio.create_task(self._listen(), name="agentlog-live")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), within)

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @contextlib.contextmanager
    def subscribe(
        self, session_id: str, *, deltas: bool = False, turn_id: str | None = None
    ) -> Iterator[Subscription]:
        """A subscription to the session's signals for the block (subscribe before reading,
        so that nothing committed after the read goes unannounced); with `turn_id`, to that
        turn's end only (and to anything that may have been missed)."""
        sub = Subscription(session_id, deltas, turn_id)
        self._subs.setdefault(session_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[session_id]

    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return sum(len(s) for s in self._subs.values())

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.projected(None)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == channels.PROJECTED:
            seqs = channels.parse_projected(payload)
            if seqs is None:
                self._wake_all()
                return
            for sid, seq in seqs.items():
                for sub in self._subs.get(sid, ()):
                    sub.projected(seq)
        elif channel == channels.TURNS:
            finished = channels.parse_turns(payload)
            if finished is None:
                self._wake_all()
                return
            for turn_id, sid in finished.items():
                for sub in self._subs.get(sid, ()):
                    if sub.turn_id == turn_id:
                        sub.finished()
        elif channel == channels.DELTAS and self._subs:
            try:
                delta = json.loads(payload)
                sid = delta.pop("session_id")
            except (ValueError, AttributeError, KeyError):
                log.debug("unreadable text delta: %.200s", payload)
                return
            for sub in self._subs.get(sid, ()):
                sub.delta(delta)

    async def _listen(self) -> None:
        """Listen until cancelled, reconnecting with backoff; every (re)connection wakes every
        subscriber, for whatever was committed while no one listened."""
        backoff = BACKOFF_S[0]
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except Exception as exc:
                log.warning(
                    "live listener lost its connection (%s: %s); reconnecting", type(exc).__name__, exc
                )
            finally:
                self._connected.clear()
                self.backend_pid = None
            self._wake_all()  # they poll at the outage interval until it is back
            if time.monotonic() - started > BACKOFF_S[1]:
                backoff = BACKOFF_S[0]  # it had been up a while: a fresh failure
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _session(self) -> None:
        """One connection's life: LISTEN, announce it, dispatch until it breaks."""
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, application_name=APPLICATION_NAME, connect_timeout=10
        ) as conn:
            for channel in self._channels:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.backend_pid = conn.info.backend_pid
            self.connects += 1
            self._connected.set()
            self._wake_all()
            while True:
                async for note in conn.notifies(timeout=HEALTH_CHECK_S):
                    try:
                        self._dispatch(note.channel, note.payload)
                    except Exception:  # one bad signal must not stop the listener
                        log.exception("live listener could not dispatch a notification")
                await conn.execute("SELECT 1")
