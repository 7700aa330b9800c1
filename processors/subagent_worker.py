"""The sub-agent worker (queue model): starts the child session of a Task call, and relays
the child's end to its parent as `subagent_completed`.

A child is a session like any other: the reactor, model and tool workers run it. A parent
and its child usually live on different partitions, so on different replicas: the replica
that owns the parent's partition admits the child (at most `subagent_concurrency` running
per replica; the rest wait in order) and starts it; the replica that owns the child's
partition sees it end and reports to the parent, from what the child's `session_started`
says about the call. The admitting replica also looks at its running children in Postgres
every tick (to free their slots, and to report an end nobody reported). Everything is
derived from the log, so a replica killed at any point resumes by reconciling: children not
yet started are started, ended ones are reported; ids are derived from the call, so a
repeat is the same event, and the parent takes one completion per attempt.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventstore import events as ev
from eventstore import ids, lineage
from eventstore.events import Event
from eventstore.state import CLOSED, SessionState
from processors import failpoints, reactor
from processors.folding import FoldingWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """What reporting a child's end needs of the Task call that started it."""

    parent_session_id: str
    tenant_id: str
    turn_id: str | None
    step: int | None
    request_event_id: Any
    requested_at: datetime
    tool_use_id: str
    attempt: int
    traceparent: str | None

    @classmethod
    def of(cls, request: ev.SubagentRequested) -> Call:
        return cls(
            request.session_id,
            request.tenant_id,
            request.turn_id,
            request.step,
            request.event_id,
            request.occurred_at,
            request.payload.tool_use_id,
            request.payload.attempt,
            request.traceparent,
        )

    @classmethod
    def from_child(cls, child: SessionState) -> Call | None:
        """The call as the child's `session_started` recorded it (None for a child started
        before it recorded the call, or not a child)."""
        m = child.config.metadata
        if child.parent_session_id is None or "request_event_id" not in m:
            return None
        return cls(
            child.parent_session_id,
            child.tenant_id,
            m.get("parent_turn_id"),
            m.get("parent_step"),
            m["request_event_id"],
            datetime.fromisoformat(m["requested_at"]),
            str(m.get("parent_tool_use_id", child.parent_tool_use_id)),
            int(m.get("attempt", 1)),
            m.get("traceparent"),
        )


class SubagentWorker(FoldingWorker):
    """Admits children of Task calls of the parents it owns; reports the ends of the children
    it owns."""

    consumer = "subagent-worker"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = self.settings.subagent_concurrency
        # Calls of owned parents by child session id; children started and waiting.
        self.requests: dict[str, ev.SubagentRequested] = {}
        self.running: set[str] = set()
        self.waiting: deque[str] = deque()
        self.started: list[str] = []
        self.completed = 0
        self.tick_s = min(self.tick_s, 0.5)

    def observe(self, event: Event) -> None:
        if isinstance(event, ev.SessionDeleted | ev.SessionExpired) and event.session_id in self.requests:
            # A child deleted while it ran will never report: its slot is free again.
            self.running.discard(event.session_id)
            self.requests.pop(event.session_id, None)

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        if isinstance(event, ev.SubagentRequested):
            await self._admit(event)
        elif isinstance(event, ev.TurnCompleted | ev.TurnFailed) and state.parent_session_id is not None:
            await self._report_child(state)
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

    async def on_caught_up(self, partitions: set[int]) -> None:
        """Reconcile the new partitions with the log: start what their parents asked for and
        was never started, report what their children or their parents' children ended."""
        parents = {s.session_id: s for s in await self.running_sessions(partitions)}
        parents.update(
            (sid, s) for sid, s in self.cache.states.items() if self.cache.partition(sid) in partitions
        )
        for parent in list(parents.values()):
            if parent.parent_session_id is not None and _ended(parent):
                await self._report_child(parent)  # a child of ours that ended: tell its parent
            turn = parent.turn(parent.current_turn)
            if turn is None:
                continue
            for task in turn.tasks:
                if turn.result_for(task.tool_use_id) is not None:
                    continue
                block = next(b for b in turn.tool_uses if b.get("id") == task.tool_use_id)
                request = reactor.subagent_request(parent, turn, block, task.attempt, task.requested_at)
                if task.child_session_id in self.cache.closed:
                    continue  # deleted: it will never answer; the parent's timeout takes over
                child = await self.cache.read(task.child_session_id)
                if child.status in CLOSED:
                    continue
                self.requests[task.child_session_id] = request
                if child.status == "new" or not child.turns:
                    # Not started, or killed between its two appends: start it (same ids).
                    await self._admit(request)
                elif _ended(child):
                    await self._report(Call.of(request), child)
                else:
                    self.running.add(child.session_id)
        await self._drain()

    async def on_tick(self) -> None:
        """Free the slots of running children that ended (whoever reported them), report
        what nobody did, and admit waiting children."""
        for child_id in list(self.running):
            request = self.requests.get(child_id)
            if request is None or not self.reads(request.session_id):
                self.running.discard(child_id)
                self.requests.pop(child_id, None)
                continue
            child = await self.cache.read(child_id)
            if child.status in CLOSED:
                self.running.discard(child_id)
                self.requests.pop(child_id, None)
            elif _ended(child):
                await self._report(Call.of(request), child)
        await self._drain()

    async def release(self, partitions: set[int]) -> None:
        """Forget the calls of parents handed to another replica (it reconciles them)."""
        for child_id, request in list(self.requests.items()):
            if self.cache.partition(request.session_id) in partitions:
                self.requests.pop(child_id, None)
                self.running.discard(child_id)
        self.waiting = deque(c for c in self.waiting if c in self.requests)

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
        metadata = {
            "parent_session_id": request.session_id,
            "parent_tool_use_id": p.tool_use_id,
            "attempt": p.attempt,
            "subagent_worker": self.consumer,
            # The call, so that the child's owner can report its end without the parent.
            "parent_turn_id": request.turn_id,
            "parent_step": request.step,
            "request_event_id": str(request.event_id),
            "requested_at": request.occurred_at.isoformat(),
            "traceparent": request.traceparent,
        }
        own = {"model": p.model or s.session_model, "system": system, "metadata": metadata, "tools": p.tools}
        child = ev.session_started(
            p.child_session_id,
            tenant_id=request.tenant_id,
            **lineage.child_start(p.limits, s.session_defaults(), **own),
            depth=p.depth,
            parent_session_id=request.session_id,
            parent_tool_use_id=p.tool_use_id,
        )
        prompt = ev.user_message(
            p.child_session_id, text=p.prompt, idempotency_key="task", tenant_id=request.tenant_id
        ).model_copy(update={"traceparent": request.traceparent})  # the child's turn joins the parent's trace
        self.running.add(p.child_session_id)
        await self.kafka.append_many([child, prompt])
        self.started.append(p.child_session_id)
        failpoints.hit(f"{self.consumer}.after_start")

    async def _report_child(self, child: SessionState) -> None:
        """A child this replica owns ended: report it from what its start recorded (or, for a
        child started before the call was recorded there, from its parent's projected state)."""
        if not _ended(child):
            return
        call = Call.from_child(child)
        if call is None:
            call = await self._call_from_parent(child)
        if call is not None:
            await self._report(call, child)

    async def _call_from_parent(self, child: SessionState) -> Call | None:
        assert child.parent_session_id is not None
        parent = await self.cache.read(child.parent_session_id)
        for turn in reversed(parent.turns):
            for task in turn.tasks:
                if task.child_session_id == child.session_id:
                    block = next(b for b in turn.tool_uses if b.get("id") == task.tool_use_id)
                    return Call.of(
                        reactor.subagent_request(parent, turn, block, task.attempt, task.requested_at)
                    )
        log.warning("subagent-worker: no call found for child %s of %s", child.session_id, parent.session_id)
        return None

    async def _report(self, call: Call, child: SessionState) -> None:
        """The child's end, as its parent's tool result (once per attempt, by its id)."""
        turn = child.turns[0]
        if turn.status == "completed":
            result, is_error = _answer(child), False
        else:
            result, is_error = f"the sub-agent failed: {turn.error}", True
        ended_at = child.last_activity_at or ev.now()
        completed = ev.SubagentCompleted(
            event_id=ids.derive(
                ids.event_key(call.parent_session_id, "subagent_completed", call.tool_use_id, call.attempt)
            ),
            session_id=call.parent_session_id,
            tenant_id=call.tenant_id,
            turn_id=call.turn_id,
            step=call.step,
            causation_id=call.request_event_id,
            correlation_id=call.turn_id,
            occurred_at=ev.now(),
            traceparent=call.traceparent,
            payload=ev.SubagentCompletedPayload(
                tool_use_id=call.tool_use_id,
                child_session_id=child.session_id,
                result=result,
                is_error=is_error,
                attempt=call.attempt,
                duration_ms=max(0, int((ended_at - call.requested_at).total_seconds() * 1000)),
            ),
        )
        await self.kafka.append(completed)
        self.completed += 1
        if child.session_id in self.requests:
            self.running.discard(child.session_id)
            del self.requests[child.session_id]


def _ended(child: SessionState) -> bool:
    return bool(child.turns) and child.turns[0].status in ("completed", "failed")


def _answer(child: SessionState) -> str:
    """The text of the child's last assistant message."""
    for message in reversed(child.messages):
        if message.role == "assistant":
            return "\n".join(b.get("text", "") for b in message.content if b.get("type") == "text").strip()
    return ""
