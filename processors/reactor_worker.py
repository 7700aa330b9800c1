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
        await self._settle(state)

    async def on_caught_up(self) -> None:
        """Resume the unfinished turns the projection knows of (e.g. from an older log epoch)."""
        resumed = 0
        for state in await self.running_sessions():
            if await self._settle(state):
                resumed += 1
        if resumed:
            log.info("reactor: resumed %d unfinished session(s)", resumed)

    async def _settle(self, state: SessionState) -> int:
        settled, reactions = reactor.settle(state, ev.now())
        if not reactions:
            return 0
        failpoints.hit("reactor.before_append")
        await self.kafka.append_many(reactions)
        # Our own reactions are folded now: the next event of this session must see them.
        self.cache.states[state.session_id] = settled
        return len(reactions)
