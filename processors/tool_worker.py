"""The tool worker: runs requested tools from the registry, many at once, and appends results.

Every outcome is a `tool_result` the model can read: an unknown tool, a tool the session
does not allow, a tool that raises or runs past its time limit all answer with an error
result, never with silence. Outcomes are recorded in the ledger (session/turn/step/tool id)
before they are appended, so a redelivered request re-emits the recorded result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from eventstore import events as ev
from eventstore import ledger
from eventstore.events import Event
from eventstore.state import SessionState
from processors import reactor
from processors.effects import EffectWorker
from processors.tools.registry import Registry, ToolOutput, default_registry

log = logging.getLogger(__name__)


class ToolWorker(EffectWorker[ev.ToolRequested]):
    """Effect worker for `tool_requested`."""

    consumer = "tool-worker"
    kind = "tool"

    def __init__(self, *args: object, tools: Registry | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tools = tools or default_registry()
        self.runs = 0

    def request(self, event: Event) -> ev.ToolRequested | None:
        return event if isinstance(event, ev.ToolRequested) else None

    def key(self, request: ev.ToolRequested) -> str:
        return ledger.tool_key(request.session_id, request.turn_id, request.step, request.payload.tool_use_id)

    def pending(self, request: ev.ToolRequested, state: SessionState) -> bool:
        turn = state.turn(request.turn_id)
        tool_use_id = request.payload.tool_use_id
        return (
            turn is not None
            and turn.status == "running"
            and turn.step == request.step
            and tool_use_id in turn.requested
            and turn.result_for(tool_use_id) is None
        )

    def unanswered(self, state: SessionState) -> list[ev.ToolRequested]:
        turn = state.turn(state.current_turn)
        if turn is None:
            return []
        return [
            reactor.tool_request(state, turn, index, block, ev.now())
            for index, block in enumerate(turn.tool_uses)
            if block.get("id") in turn.requested and turn.result_for(str(block.get("id"))) is None
        ]

    async def run_tool(self, request: ev.ToolRequested, state: SessionState) -> ToolOutput:
        """Run the tool, turning every failure into an error result the model can read."""
        name = request.payload.name
        allowed = {t.name for t in self.tools.allowed(state.tools)}
        tool = self.tools.get(name)
        if tool is None or name not in allowed:
            offer = ", ".join(sorted(allowed)) or "none"
            return ToolOutput(f"unknown tool {name!r}; the tools available are: {offer}", is_error=True)
        timeout = self.settings.tool_timeout_s
        try:
            return await asyncio.wait_for(tool.run(dict(request.payload.input)), timeout)
        except TimeoutError:
            return ToolOutput(f"{name} did not finish within {timeout:g} s and was stopped", is_error=True)
        except Exception as exc:
            log.warning("tool %s raised: %s", name, exc)
            return ToolOutput(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)

    async def perform(self, request: ev.ToolRequested, state: SessionState) -> tuple[Event, int]:
        started = time.monotonic()
        self.runs += 1
        output = await self.run_tool(request, state)
        return (
            ev.tool_result(
                request.session_id,
                turn_id=request.turn_id,
                step=request.step,
                tool_use_id=request.payload.tool_use_id,
                content=output.content,
                is_error=output.is_error,
                tenant_id=request.tenant_id,
                causation_id=request.event_id,
                duration_ms=int((time.monotonic() - started) * 1000),
            ),
            1,
        )
