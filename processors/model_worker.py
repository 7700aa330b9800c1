"""The model worker: serves model requests with many in flight, appends assistant messages.

Requests of different sessions run concurrently; a session has one request at a time (the
reactor asks for the next step only after the result). Offsets never pass a request still
in flight, so a crash redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from eventstore import events as ev
from eventstore.events import Event
from eventstore.state import SessionState
from processors import failpoints, reactor
from processors.folding import FoldingWorker
from processors.model import results
from processors.model.port import ModelClient, ModelRequest

log = logging.getLogger(__name__)


class ModelWorker(FoldingWorker):
    """Effect worker for `model_requested`."""

    consumer = "model-worker"

    def __init__(self, *args: object, model: ModelClient, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.model = model
        self.limit = asyncio.Semaphore(self.settings.model_concurrency)
        self.in_flight: dict[int, set[int]] = {}
        self.deferred: list[tuple[ev.ModelRequested, int, int]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.serving: set[tuple[str, str | None, int | None]] = set()

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        if not isinstance(event, ev.ModelRequested):
            return
        self.in_flight.setdefault(partition, set()).add(offset)
        if self.caught_up:
            self._spawn(event, partition, offset)
        else:
            # Decide after catch-up: its answer may already be further on in the log.
            self.deferred.append((event, partition, offset))

    async def on_caught_up(self) -> None:
        deferred, self.deferred = self.deferred, []
        for event, partition, offset in deferred:
            self._spawn(event, partition, offset)
        # Requests whose log is gone (an older epoch) are found through the projection.
        for state in await self.running_sessions():
            turn = state.turn(state.current_turn)
            if turn is not None and turn.model_pending:
                request = reactor.model_request(state, turn, turn.step, ev.now())
                self._spawn(request, None, None)

    def committable(self, partition: int) -> int:
        pending = self.in_flight.get(partition)
        return min(pending) if pending else self.position.get(partition, 0)

    def _spawn(self, event: ev.ModelRequested, partition: int | None, offset: int | None) -> None:
        key = (event.session_id, event.turn_id, event.step)
        if key in self.serving:
            if partition is not None and offset is not None:
                self.in_flight[partition].discard(offset)
            return
        self.serving.add(key)
        task = asyncio.create_task(self._serve(event, partition, offset))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _still_pending(self, event: ev.ModelRequested) -> SessionState | None:
        state = self.cache.states.get(event.session_id)
        if state is None:
            return None
        turn = state.turn(event.turn_id)
        if turn is None or turn.status != "running" or not turn.model_pending or turn.step != event.step:
            return None
        return state

    async def _serve(self, event: ev.ModelRequested, partition: int | None, offset: int | None) -> None:
        try:
            state = self._still_pending(event)
            if state is None:
                return
            async with self.limit:
                await self._call(event, state)
        except Exception:
            log.exception("model request %s failed", event.event_id)
        finally:
            self.serving.discard((event.session_id, event.turn_id, event.step))
            if partition is not None and offset is not None:
                self.in_flight[partition].discard(offset)

    async def _call(self, event: ev.ModelRequested, state: SessionState) -> None:
        request = ModelRequest(
            model=event.payload.model,
            system=state.system,
            messages=[m.as_api() for m in state.messages],
        )
        started = time.monotonic()
        result: Event
        try:
            response = await self.model.complete(request)
        except Exception as exc:
            result = results.failed(event, f"model call failed: {type(exc).__name__}: {exc}", ev.now())
        else:
            took = int((time.monotonic() - started) * 1000)
            result = results.answered(event, response, ev.now(), took)
        failpoints.hit("model-worker.before_append")
        await self.kafka.append(result)
