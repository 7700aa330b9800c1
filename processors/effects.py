"""The effect workers' common loop: many requests in flight, the ledger before any effect.

A request is served at most once at a time per key; its outcome is looked up in the
ledger first (recorded: re-emit it, do nothing), then produced, recorded, and appended.
Offsets never pass a request still in flight, so a crash redelivers it, and the ledger
absorbs the redelivery. A failure to record or append is fatal to the worker (it exits
and is restarted) rather than silently dropping a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import psycopg
from opentelemetry.trace import Span, SpanKind

from eventstore import ledger, store
from eventstore.events import Event
from eventstore.state import SessionState
from observe import tracing
from processors import failpoints
from processors.folding import FoldingWorker

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Event)
T = TypeVar("T")

# Ledger connections per worker: writes of different keys run side by side (one connection
# serialised every model and tool call of a replica behind each other's round trips).
LEDGER_CONNECTIONS = 3


class EffectWorker(FoldingWorker, Generic[R]):
    """Base of the model and tool workers. Subclasses say what they serve and how."""

    kind = "effect"

    def __init__(self, *args: object, concurrency: int = 256, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limit = asyncio.Semaphore(concurrency)
        self.in_flight: dict[int, set[int]] = {}
        self.deferred: list[tuple[R, int, int]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.task_partition: dict[asyncio.Task[None], int] = {}
        # A model call runs under a lease in the ledger (renewed while it runs), so two
        # replicas never both call the model for one key; None: no lease (tools).
        self.lease_s: float | None = None
        self.serving: set[str] = set()
        # Records asking for a key while a task serves it: handed to `_spawn` again once that
        # task ended well (their offsets stay in flight until then; a failure or a revocation
        # leaves them there, so no offset passes a request that nobody served).
        self.waiting: dict[str, list[tuple[R, int, int]]] = {}
        self.performed = 0
        self.reemitted = 0
        # Ledger writes run transactions: connections of their own, each used by one write
        # at a time (opened when first needed; a broken one is replaced).
        self.ledger_conns: asyncio.Queue[store.AsyncConn | None] = asyncio.Queue()
        for _ in range(LEDGER_CONNECTIONS):
            self.ledger_conns.put_nowait(None)
        self.ledger_opened: list[store.AsyncConn] = []

    # What a subclass defines.

    def request(self, event: Event) -> R | None:
        """The event as a request this worker serves, or None."""
        raise NotImplementedError

    def key(self, request: R) -> str:
        """The request's ledger key."""
        raise NotImplementedError

    def pending(self, request: R, state: SessionState) -> bool:
        """Whether the session still waits for this request's outcome."""
        raise NotImplementedError

    def unanswered(self, state: SessionState) -> list[R]:
        """Requests of a session that wait for an outcome (to resume them after a restart)."""
        raise NotImplementedError

    def unrecordable(self, request: R, reason: str) -> Event:
        """The outcome to record instead of one Postgres refuses to store."""
        raise NotImplementedError

    def measure(self, request: R, outcome: Event, attempts: int, seconds: float) -> None:
        """Count a performed effect in this instance's metrics (not a re-emitted one)."""

    def span(self, request: R) -> tuple[str, SpanKind, dict[str, Any]]:
        """The name, kind and first attributes of the effect's span."""
        raise NotImplementedError

    def describe(self, span: Span, outcome: Event) -> None:
        """Set what the outcome tells on the effect's span (usage, errors)."""

    async def perform(self, request: R, state: SessionState) -> tuple[Event, int]:
        """Do the effect; returns its outcome event and the attempts it took. Must not raise
        for failures of the effect itself: those are outcomes too."""
        raise NotImplementedError

    # The loop.

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        request = self.request(event)
        if request is None:
            return
        failpoints.hit(f"{self.consumer}.after_consume")
        self.in_flight.setdefault(partition, set()).add(offset)
        if self.live(partition):
            self._spawn(request, partition, offset)
        else:
            # Decide after catch-up: its outcome may already be further on in the log.
            self.deferred.append((request, partition, offset))

    async def on_caught_up(self, partitions: set[int]) -> None:
        deferred = [d for d in self.deferred if d[1] in partitions]
        self.deferred = [d for d in self.deferred if d[1] not in partitions]
        for request, partition, offset in deferred:
            self._spawn(request, partition, offset)
        # Requests whose log is gone (an older epoch) are found through the projection.
        for state in await self.running_sessions(partitions):
            for request in self.unanswered(state):
                self._spawn(tracing.in_turn_trace(state, request), None, None)

    def committable(self, partition: int) -> int:
        pending = self.in_flight.get(partition)
        return min(pending) if pending else self.position.get(partition, 0)

    def _spawn(self, request: R, partition: int | None, offset: int | None) -> None:
        key = self.key(request)
        if key in self.serving:
            if partition is not None and offset is not None:
                self.waiting.setdefault(key, []).append((request, partition, offset))
            return
        self.serving.add(key)
        task = asyncio.create_task(self._serve(request, key, partition, offset))
        self.tasks.add(task)
        self.task_partition[task] = self.cache.partition(request.session_id)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.task_partition.pop(task, None)

    async def release(self, partitions: set[int]) -> None:
        """Give the partitions' requests in flight a moment to finish, then cancel the rest:
        their offsets were never saved, so the next owner serves them again (the ledger
        says what was done)."""
        mine = {t for t, p in self.task_partition.items() if p in partitions}
        if mine:
            await asyncio.wait(mine, timeout=self.settings.drain_timeout_s)
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.wait(mine, timeout=5)
        self.deferred = [d for d in self.deferred if d[1] not in partitions]

    def forget(self, partitions: set[int]) -> None:
        # Their offsets are saved: what was in flight is the next owner's to serve.
        for partition in partitions:
            self.in_flight.pop(partition, None)
        for key, records in list(self.waiting.items()):
            self.waiting[key] = [r for r in records if r[1] not in partitions]

    def _release(self, partition: int | None, offset: int | None) -> None:
        if partition is not None and offset is not None:
            self.in_flight.get(partition, set()).discard(offset)

    async def _serve(self, request: R, key: str, partition: int | None, offset: int | None) -> None:
        try:
            # (Loaded again if the bounded cache dropped the state meanwhile.)
            state = await self.cache.get(request.session_id)
            if self.pending(request, state):
                async with self.limit:
                    # Asked again once a slot is free: an interrupt or a deadline may have
                    # answered it while it queued.
                    state = await self.cache.get(request.session_id)
                    if self.pending(request, state):
                        await self._effect(request, key, state)
        except Exception as exc:
            # The outcome could not be recorded or appended: keep the offset where it is
            # and stop, so that a restart serves this request again.
            log.exception("%s: serving %s failed", self.consumer, key)
            self.fatal = exc
            self.serving.discard(key)
        else:
            self.serving.discard(key)
            self._release(partition, offset)
            # Asked for again meanwhile: decided again on the state as it is now.
            for again, p, o in self.waiting.pop(key, []):
                if p in self.position:
                    self._spawn(again, p, o)
        finally:
            self.serving.discard(key)  # cancelled too (a revocation): the next owner serves it

    async def _effect(self, request: R, key: str, state: SessionState) -> None:
        # Under a lease, taking it answers what is recorded too: one ledger write, no lookup.
        outcome = await ledger.recorded(self.conn, key) if self.lease_s is None else None
        if outcome is None and self.lease_s is not None:
            outcome = await self._leased(request, key)
            if outcome is None and not self.pending(request, await self.cache.get(request.session_id)):
                return  # answered (or abandoned) while another replica held the lease
        if outcome is not None:
            self.reemitted += 1
        else:
            failpoints.hit(f"{self.consumer}.before_call")
            started = time.monotonic()
            name, kind, attributes = self.span(request)
            with tracing.child_span(name, request.traceparent, kind, attributes) as span:
                produced, attempts = await self._under_lease(key, self.perform(request, state))
                _quietly(self.describe, span, produced)
            _quietly(self.measure, request, produced, attempts, time.monotonic() - started)
            produced = _in_trace_of(request, produced)
            failpoints.hit(f"{self.consumer}.after_call")
            try:
                outcome = await self._ledger_call(
                    ledger.record, key, self.kind, request, produced, attempts, self.fence
                )
            except psycopg.DataError as exc:
                # The outcome holds what Postgres cannot store: record a failure that says so.
                log.warning("%s: outcome of %s cannot be recorded: %s", self.consumer, key, exc)
                produced = _in_trace_of(
                    request,
                    self.unrecordable(request, f"the result could not be recorded: {exc}".splitlines()[0]),
                )
                outcome = await self._ledger_call(
                    ledger.record, key, self.kind, request, produced, attempts, self.fence
                )
            self.performed += 1
            failpoints.hit(f"{self.consumer}.after_ledger")
            if outcome is None:
                log.info("%s: session %s was deleted during %s", self.consumer, request.session_id, key)
                return
        await self.kafka.append(outcome)
        failpoints.hit(f"{self.consumer}.after_append")

    async def _leased(self, request: R, key: str) -> Event | None:
        """Take the lease on `key`, waiting while another replica holds it; returns the outcome
        if one was recorded meanwhile, else None with the lease held by this replica."""
        assert self.lease_s is not None
        while True:
            held = await self._ledger_call(
                ledger.lease, key, self.kind, request, self.metrics.instance, self.lease_s, self.fence
            )
            if held is None:
                return None
            if held.outcome is not None:
                return held.outcome
            if not self.pending(request, await self.cache.get(request.session_id)):
                return None
            await asyncio.sleep(min(1.0, self.lease_s / 3))

    async def _under_lease(self, key: str, work: Awaitable[T]) -> T:
        """Run `work`, renewing the lease on `key` meanwhile; if the lease is lost (this replica
        was paused and another took over), cancel the work and fail: it must not be recorded."""
        if self.lease_s is None:
            return await work
        lease_s = self.lease_s
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=lease_s / 3)
                if done:
                    return task.result()
                if not await self._ledger_call(ledger.renew, key, self.metrics.instance, lease_s):
                    raise LeaseLost(f"{self.consumer}: the lease on {key} was lost")
        finally:
            if not task.done():
                task.cancel()

    async def _ledger_call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a ledger function (it may open a transaction) on a free ledger connection."""
        conn = await self.ledger_conns.get()
        try:
            if conn is None or conn.closed:
                conn = await store.connect(self.settings.database_url)
                self.ledger_opened.append(conn)
            return await fn(conn, *args)
        finally:
            self.ledger_conns.put_nowait(conn)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        for conn in self.ledger_opened:
            await conn.close()


class LeaseLost(Exception):
    """Another replica took over a call this one was making: its outcome must not be recorded."""


def _in_trace_of(request: Event, outcome: Event) -> Event:
    """The outcome belongs to its request's trace (the turn's)."""
    if request.traceparent is None or outcome.traceparent is not None:
        return outcome
    return outcome.model_copy(update={"traceparent": request.traceparent})


def _quietly(observe: Callable[..., None], *args: Any) -> None:
    """Metrics and spans never fail an effect: it is done, and must be recorded, not rerun."""
    try:
        observe(*args)
    except Exception:
        log.warning("observing an effect failed", exc_info=True)
