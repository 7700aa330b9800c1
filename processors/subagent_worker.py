"""The sub-agent worker (queue model): starts the child session of a Task call, and relays
the child's end to its parent as `subagent_completed`.

A child is a session like any other: the reactor, model and tool workers run it. This
worker only admits children (at most `subagent_concurrency` running per worker; the rest
wait in order) and watches them end. Workers split the children between them by a hash of
the child's session id, so a fan-out spreads over the workers. Everything is derived from
the log (the parent's task attempts, the children's states), so a worker killed at any
point resumes by reconciling: children not yet started are started, ended ones are
reported; ids are derived from the call, so a repeat is the same event, and the parent
takes one completion per attempt.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from typing import Any

from eventstore import events as ev
from eventstore import ids, lineage
from eventstore.events import Event
from eventstore.state import SessionState
from processors import failpoints, reactor
from processors.folding import FoldingWorker

log = logging.getLogger(__name__)


class SubagentWorker(FoldingWorker):
    """Admits children of Task calls and reports their ends to their parents."""

    consumer = "subagent-worker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        index, count = self.settings.subagent_worker_index, self.settings.subagent_worker_count
        if count > 1:
            self.consumer = f"subagent-worker-{index}"
        self.limit = self.settings.subagent_concurrency
        # Owned calls by child session id: the request, and whether the child was started.
        self.requests: dict[str, ev.SubagentRequested] = {}
        self.running: set[str] = set()
        self.waiting: deque[str] = deque()
        self.started: list[str] = []
        self.completed = 0

    def owns(self, child_session_id: str) -> bool:
        """Whether this worker runs this child (a stable hash of its id)."""
        digest = int(hashlib.sha256(child_session_id.encode()).hexdigest()[:8], 16)
        return digest % self.settings.subagent_worker_count == self.settings.subagent_worker_index

    def observe(self, event: Event) -> None:
        if isinstance(event, ev.SessionDeleted | ev.SessionExpired) and event.session_id in self.requests:
            # A child deleted while it ran will never report: its slot is free again.
            self.running.discard(event.session_id)
            self.requests.pop(event.session_id, None)

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        if isinstance(event, ev.SubagentRequested) and self.owns(event.payload.child_session_id):
            await self._admit(event)
        elif isinstance(event, ev.TurnCompleted | ev.TurnFailed) and event.session_id in self.requests:
            await self._report(event.session_id)
        await self._drain()

    async def _current(self, request: ev.SubagentRequested) -> bool:
        """Whether the parent still waits for this attempt (not abandoned, not answered)."""
        parent = await self.cache.get(request.session_id)
        turn = parent.turn(request.turn_id)
        if turn is None or turn.status != "running" or turn.step != request.step:
            return False
        task = turn.task_for(request.payload.tool_use_id)
        return (
            task is not None
            and task.attempt == request.payload.attempt
            and turn.result_for(request.payload.tool_use_id) is None
        )

    async def on_caught_up(self) -> None:
        """Reconcile with the log: start what was asked and never started, report what ended."""
        parents = {s.session_id: s for s in await self.running_sessions()}
        parents.update(self.cache.states)
        for parent in list(parents.values()):
            turn = parent.turn(parent.current_turn)
            if turn is None:
                continue
            for task in turn.tasks:
                if turn.result_for(task.tool_use_id) is not None or not self.owns(task.child_session_id):
                    continue
                block = next(b for b in turn.tool_uses if b.get("id") == task.tool_use_id)
                request = reactor.subagent_request(parent, turn, block, task.attempt, task.requested_at)
                if task.child_session_id in self.cache.closed:
                    continue  # deleted: it will never answer; the parent's timeout takes over
                child = await self.cache.get(task.child_session_id)
                self.requests[task.child_session_id] = request
                if child.status == "new" or not child.turns:
                    # Not started, or killed between its two appends: start it (same ids).
                    await self._admit(request)
                elif _ended(child):
                    await self._report(child.session_id)
                else:
                    self.running.add(child.session_id)
        await self._drain()

    async def _admit(self, request: ev.SubagentRequested) -> None:
        child_id = request.payload.child_session_id
        self.requests[child_id] = request
        if child_id in self.running or child_id in self.waiting:
            return
        self.waiting.append(child_id)

    async def _drain(self) -> None:
        """Start waiting children while there are free slots, skipping dead attempts."""
        while self.waiting and len(self.running) < self.limit:
            child_id = self.waiting.popleft()
            request = self.requests.get(child_id)
            if request is None:
                continue
            if not await self._current(request):
                del self.requests[child_id]  # abandoned or answered meanwhile: not worth running
                continue
            await self._start(request)

    async def _start(self, request: ev.SubagentRequested) -> None:
        p = request.payload
        s = self.settings
        system = ev.subagent_system(p.description)
        child = ev.session_started(
            p.child_session_id,
            model=p.model or s.session_model,
            tenant_id=request.tenant_id,
            system=system,
            metadata={
                "parent_session_id": request.session_id,
                "parent_tool_use_id": p.tool_use_id,
                "attempt": p.attempt,
                "subagent_worker": self.consumer,
            },
            tools=p.tools,
            depth=p.depth,
            parent_session_id=request.session_id,
            parent_tool_use_id=p.tool_use_id,
            **{
                "max_depth": s.subagent_max_depth,
                "max_steps": s.max_steps,
                "max_tokens": s.max_tokens,
                **lineage.only_inherited(p.limits),
            },
        )
        prompt = ev.user_message(
            p.child_session_id, text=p.prompt, idempotency_key="task", tenant_id=request.tenant_id
        ).model_copy(update={"traceparent": request.traceparent})  # the child's turn joins the parent's trace
        self.running.add(p.child_session_id)
        await self.kafka.append_many([child, prompt])
        self.started.append(p.child_session_id)
        failpoints.hit(f"{self.consumer}.after_start")

    async def _report(self, child_id: str) -> None:
        """The child's end, as its parent's tool result (once per attempt, by its id)."""
        request = self.requests.get(child_id)
        if request is None:
            return
        child = await self.cache.get(child_id)
        if not _ended(child):
            return
        turn = child.turns[0]
        if turn.status == "completed":
            result, is_error = _answer(child), False
        else:
            result, is_error = f"the sub-agent failed: {turn.error}", True
        ended_at = child.last_activity_at or ev.now()
        p = request.payload
        completed = ev.SubagentCompleted(
            event_id=ids.derive(
                ids.event_key(request.session_id, "subagent_completed", p.tool_use_id, p.attempt)
            ),
            session_id=request.session_id,
            tenant_id=request.tenant_id,
            turn_id=request.turn_id,
            step=request.step,
            causation_id=request.event_id,
            correlation_id=request.turn_id,
            occurred_at=ev.now(),
            payload=ev.SubagentCompletedPayload(
                tool_use_id=p.tool_use_id,
                child_session_id=child_id,
                result=result,
                is_error=is_error,
                attempt=p.attempt,
                duration_ms=max(0, int((ended_at - request.occurred_at).total_seconds() * 1000)),
            ),
        )
        await self.kafka.append(completed)
        self.completed += 1
        self.running.discard(child_id)
        del self.requests[child_id]


def _ended(child: SessionState) -> bool:
    return bool(child.turns) and child.turns[0].status in ("completed", "failed")


def _answer(child: SessionState) -> str:
    """The text of the child's last assistant message."""
    for message in reversed(child.messages):
        if message.role == "assistant":
            return "\n".join(b.get("text", "") for b in message.content if b.get("type") == "text").strip()
    return ""
