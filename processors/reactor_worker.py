"""The reactor worker: folds every session and appends what `react` decides, in log order.

Its cache holds exactly the fold of the log. Reactions it appended but has not yet read
back are kept aside (`unseen`) and folded over the cached state before deciding, so it
never asks twice for the same thing, and the cache never runs ahead of the log: if
another writer's event lands first, the log's order is the truth.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventstore import events as ev
from eventstore import ledger, reads
from eventstore.events import Event
from eventstore.state import CLOSED, SessionState, fold
from observe import tracing
from processors import failpoints, reactor
from processors.folding import UNAVAILABLE, FoldingWorker

log = logging.getLogger(__name__)


class ReactorWorker(FoldingWorker):
    """Decides; never calls a model or a tool, so it never blocks a partition."""

    consumer = "reactor"

    def __init__(
        self,
        *args: object,
        approve: frozenset[str] = frozenset(),
        tool_tokens: Mapping[str, int] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Tools whose every call waits for a human (declared by the tool, not the session).
        self.approve = approve
        # The estimated size of each tool's definition: a model call's share of the window.
        self.tool_tokens = tool_tokens or {}
        self.unseen: dict[str, dict[uuid.UUID, Event]] = {}
        # The record being acted on, while its reactions may be left unconfirmed (`act`).
        self.acting: tuple[int, int] | None = None
        # Reactions sent and not yet acknowledged: (partition, offset of their record, sent).
        self.in_flight: list[tuple[int, int, list[asyncio.Future[Any]]]] = []
        self.tick_s = self.settings.expiry_check_s
        self.expired = 0

    def observe(self, event: Event) -> None:
        mine = self.unseen.get(event.session_id)
        if mine is not None and mine.pop(event.event_id, None) is not None and not mine:
            del self.unseen[event.session_id]

    def _ahead(self, state: SessionState) -> SessionState:
        """The state with our own appended-but-unread reactions folded in."""
        mine = self.unseen.get(state.session_id)
        return fold(state.session_id, mine.values(), state) if mine else state

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        failpoints.hit("reactor.after_consume")
        if isinstance(event, ev.TurnCompleted | ev.TurnFailed):
            try:
                self._measure_turn(event, state)
            except Exception:  # observing never stops a reaction
                log.warning("reactor: measuring turn %s failed", event.turn_id, exc_info=True)
        # A batch's reactions go out one after another without waiting for each to be
        # acknowledged (`flush` waits for all, before the batch's offsets can be saved): an
        # acknowledgement per record was most of a loaded reactor's time.
        self.acting = (partition, offset)
        try:
            await self._settle(state)
        finally:
            self.acting = None

    async def flush(self) -> None:
        pending, self.in_flight = self.in_flight, []
        if not pending:
            return
        try:
            await self.kafka.confirm([f for _, _, sent in pending for f in sent])
        except BaseException:
            self.in_flight = pending
            self.rewind()
            raise

    def rewind(self) -> None:
        pending, self.in_flight = self.in_flight, []
        for partition, offset, sent in pending:
            for f in sent:
                if not f.done():
                    f.cancel()
            if partition in self.position:
                self.position[partition] = min(self.position[partition], offset)

    def _measure_turn(self, event: ev.TurnCompleted | ev.TurnFailed, state: SessionState) -> None:
        """Count a turn that ended, whoever ended it (the reactor, or a model worker's failure).
        After a restart between acting and saving offsets a turn may be counted (and its
        span recorded, with the same ids) twice: metrics are at-least-once."""
        turn = state.turn(event.turn_id or "")
        if turn is None or turn.status not in ("completed", "failed"):
            return
        outcome = "refused" if turn.refused else turn.status
        self.metrics.turns.labels(outcome).inc()
        if turn.started_at is not None:
            took = (event.occurred_at - turn.started_at).total_seconds()
            self.metrics.turn_duration.labels(outcome).observe(max(0.0, took))
            self.metrics.turn_steps.observe(turn.step)
        tracing.record_turn(
            state.session_id,
            turn.turn_id,
            turn.traceparent,
            turn.started_at or event.occurred_at,
            event.occurred_at,
            {
                "gen_ai.conversation.id": state.session_id,
                "gen_ai.request.model": state.config.model or "",
                "gen_ai.usage.input_tokens": turn.usage.input_tokens,
                "gen_ai.usage.output_tokens": turn.usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": turn.usage.cache_read_input_tokens,
                "gen_ai.usage.cache_creation.input_tokens": turn.usage.cache_creation_input_tokens,
                "agentlog.tenant_id": state.tenant_id,
                "agentlog.turn_id": turn.turn_id,
                "agentlog.steps": turn.step,
                "agentlog.outcome": outcome,
                # An unknown cost (an unpriced model) is left out, never reported as 0.
                **({} if turn.cost_usd is None else {"agentlog.cost_usd": float(turn.cost_usd)}),
            },
            turn.error or turn.refused if outcome != "completed" else None,
        )

    async def on_caught_up(self, partitions: set[int]) -> None:
        """Resume the unfinished turns of newly owned partitions that the projection knows of
        (e.g. from an older log epoch, or left by the replica that owned them before)."""
        resumed = 0
        for state in await self.running_sessions(partitions):
            try:
                resumed += bool(await self._settle(state))
            except UNAVAILABLE:
                raise
            except Exception:  # one session that cannot be settled must not stop the others
                log.exception("reactor: cannot resume session %s", state.session_id)
        if resumed:
            log.info("reactor: resumed %d unfinished session(s)", resumed)

    async def on_tick(self) -> None:
        """Timers: expire idle sessions past their TTL; give up on tools that never answer;
        retry or give up on sub-agents past their timeout; fail a turn whose model call nobody
        answered by its deadline."""
        at = ev.now()
        deadline = self.settings.tool_deadline_s
        model_deadline = self.settings.model_deadline_s
        unclaimed = min(model_deadline, self.settings.model_unclaimed_s)
        candidates = await reads.timer_candidates(self.conn, at, deadline, unclaimed)
        if candidates and self.fence is not None:
            # A replica back from a stall past its group's timeouts may have lost these
            # partitions: it must not fail a turn or a tool its successor already finished.
            await self.fence.raise_unless_owned(self.conn, self.owned)
        for sid in candidates:
            if not self.reads(sid):
                continue
            state = await self.cache.get(sid)
            if state.status in CLOSED:
                continue
            ahead = self._ahead(state)
            expiry = reactor.expiry(ahead, at)
            if expiry is not None:
                await self._append([expiry])
                self.expired += 1
                log.info("reactor: session %s expired", state.session_id)
            late = reactor.overdue(ahead, at, deadline) + reactor.subagent_timeouts(ahead, at)
            if late:
                log.warning(
                    "reactor: %d tool call(s) of %s got no result in %gs",
                    len(late),
                    state.session_id,
                    deadline,
                )
                await self._append([tracing.in_turn_trace(ahead, r) for r in late])
            await self._ask_again(ahead, at)
            stuck = reactor.model_overdue(ahead, at, model_deadline)
            if stuck:
                log.error(
                    "reactor: the model call of %s got no answer in %gs; the turn fails",
                    state.session_id,
                    model_deadline,
                )
                await self._append([tracing.in_turn_trace(ahead, r) for r in stuck])

    async def _ask_again(self, state: SessionState, at: datetime) -> None:
        """Ask once more for a model call that no worker took (no ledger row) in time."""
        for again in reactor.model_unclaimed(state, at, self.settings.model_unclaimed_s):
            if await ledger.entry(self.conn, ledger.model_key(again.session_id, again.turn_id, again.step)):
                continue  # taken: a long call under its lease, or answered and on its way
            log.warning(
                "reactor: no model worker took step %s of %s in %gs; asking once more",
                again.step,
                again.session_id,
                self.settings.model_unclaimed_s,
            )
            await self._append([tracing.in_turn_trace(state, again)])

    async def _settle(self, state: SessionState) -> int:
        ahead = self._ahead(state)
        _, reactions = reactor.settle(ahead, ev.now(), approve=self.approve, tool_tokens=self.tool_tokens)
        if reactions:
            await self._append([tracing.in_turn_trace(ahead, r) for r in reactions])
        return len(reactions)

    async def _append(self, reactions: list[Event]) -> None:
        failpoints.hit("reactor.before_append")
        if self.acting is not None:
            self.in_flight.append((*self.acting, await self.kafka.queue(reactions)))
        else:
            await self.kafka.append_many(reactions)
        failpoints.hit("reactor.after_append")
        mine = self.unseen.setdefault(reactions[0].session_id, {})
        for reaction in reactions:
            mine[reaction.event_id] = reaction
