"""The reactor worker: folds every session and appends what `react` decides, in log order."""

from __future__ import annotations

import logging

from eventstore import events as ev
from eventstore.events import Event
from eventstore.state import SessionState
from processors import failpoints, reactor
from processors.folding import FoldingWorker

log = logging.getLogger(__name__)


class ReactorWorker(FoldingWorker):
    """Decides; never calls a model or a tool, so it never blocks a partition."""

    consumer = "reactor"

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        await self._append(reactor.react(state, ev.now()))

    async def on_caught_up(self) -> None:
        """Resume the unfinished turns the projection knows of (e.g. from an older log epoch)."""
        resumed = 0
        for state in await self.running_sessions():
            reactions = reactor.react(state, ev.now())
            if reactions:
                resumed += 1
                await self._append(reactions)
        if resumed:
            log.info("reactor: resumed %d unfinished session(s)", resumed)

    async def _append(self, reactions: list[Event]) -> None:
        if not reactions:
            return
        failpoints.hit("reactor.before_append")
        await self.kafka.append_many(reactions)
        # Fold our own reactions now: the next event of this session must see them.
        for reaction in reactions:
            await self.cache.apply(reaction)
