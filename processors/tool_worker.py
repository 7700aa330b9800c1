"""The tool executor: runs requested tools in the session's workspace, many at once, and
appends their results, each exactly as often as its idempotency class allows.

- `read` and `fetch`: a recorded result is re-emitted; otherwise the tool runs (again).
- `guarded_write` (Write, Edit): the plan (file, pre- and post-image hashes) is recorded
  before the file changes. After a crash the file says what happened: the post-image means
  done, the pre-image means not yet (run it), anything else is reported as changed under
  the tool. A `@tool` function of this class records its start, and after a crash its
  check says: in place (done), not (run it), or it cannot tell ("outcome unknown").
- `write` (a Bash command that may change things): its start is recorded before it runs;
  a start without an outcome after a crash is answered "outcome unknown", never rerun.

Every failure is a `tool_result` the model can read: an unknown or disallowed tool, a tool
that raises or overruns its time limit. A result over the size limit is stored whole in
Postgres and the model sees a cut copy that says so. Secrets are redacted from every result
before the ledger, `tool_outputs` or the log sees it (`redact.py`). Executors share the
partitions through their consumer group, and the workspaces through one root every executor
mounts (`workspace_root`): a session's calls run one at a time, across executors too (a
Postgres advisory lock per workspace), so a replica that takes over a partition sees the
files the earlier calls left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from eventstore import events as ev
from eventstore import ids, ledger, owners
from eventstore.events import Event
from eventstore.state import SessionState
from processors import failpoints, reactor
from processors.effects import EffectWorker
from processors.tools import cgroups, mcp, redact
from processors.tools.files import WritePlan, sha256_of
from processors.tools.function import FunctionTool
from processors.tools.mcp_pool import Pool as McpPool
from processors.tools.registry import (
    EffectClass,
    Registry,
    Tool,
    ToolContext,
    ToolOutput,
    default_registry,
    within,
)
from processors.tools.workspace import PathRefused, remove_workspace, workspace_for

log = logging.getLogger(__name__)


def unknown(tool: Tool) -> str:
    """The result of a `write` call whose start was recorded and whose outcome was not."""
    what = "the command" if tool.name == "Bash" else f"the {tool.name} call"
    return (
        f"outcome unknown: {what} may or may not have run (the executor stopped while it was"
        " running); it was not run again. Check its effects before retrying."
    )


class ToolWorker(EffectWorker[ev.ToolRequested]):
    """Effect worker for `tool_requested`."""

    consumer = "tool-worker"
    kind = "tool"

    def __init__(self, *args: Any, tools: Registry | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tools = tools or default_registry()
        self.mcp = McpPool()  # connections to MCP servers, kept open across calls
        self.runs = 0
        # One call at a time per workspace: a Bash command cannot swap a path for a symlink
        # between a file tool's check and its write, and two Edits never plan on one image.
        self.workspace_locks: dict[str, asyncio.Lock] = {}
        self.removals: set[asyncio.Task[None]] = set()  # workspaces of deleted sessions
        if self.tools.get("Bash") is not None:
            # At start, once: where commands get a cgroup each, or a warning that they cannot.
            cgroups.probe(self.settings.bash_cgroup)

    async def close(self) -> None:
        if self.removals:
            await asyncio.wait(self.removals, timeout=self.settings.drain_timeout_s)
        await super().close()
        await self.mcp.close()

    def request(self, event: Event) -> ev.ToolRequested | None:
        return event if isinstance(event, ev.ToolRequested) else None

    async def act(self, event: Event, state: SessionState, partition: int, offset: int) -> None:
        """Serve tool requests; remove a deleted session's workspace (the executor owning the
        session's partition does, on the root every executor shares)."""
        if isinstance(event, ev.SessionDeleted):
            # In the background: a call of the session may hold its workspace for a while.
            task = asyncio.create_task(self._remove_workspace(event))
            self.removals.add(task)
            task.add_done_callback(self.removals.discard)
        await super().act(event, state, partition, offset)

    async def _remove_workspace(self, event: ev.SessionDeleted) -> None:
        lock = self.workspace_locks.setdefault(event.session_id, asyncio.Lock())
        async with lock:  # not under a running call of the session
            try:
                removed = await asyncio.to_thread(
                    remove_workspace, self.settings.workspace_root, event.tenant_id, event.session_id
                )
            except (OSError, PathRefused) as exc:
                log.error(
                    "tool-worker: workspace of deleted session %s not removed: %s", event.session_id, exc
                )
                return
        self.workspace_locks.pop(event.session_id, None)
        if removed:
            log.info("tool-worker: removed the workspace of deleted session %s", event.session_id)

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
            if block.get("id") in turn.requested
            and turn.result_for(str(block.get("id"))) is None
            and turn.task_for(str(block.get("id"))) is None  # a sub-agent, not a tool run
        ]

    def unrecordable(self, request: ev.ToolRequested, reason: str) -> Event:
        return ev.tool_result(
            request.session_id,
            turn_id=request.turn_id,
            step=request.step,
            tool_use_id=request.payload.tool_use_id,
            content=reason,
            is_error=True,
            tenant_id=request.tenant_id,
            causation_id=request.event_id,
        )

    def context(self, state: SessionState, request: ev.ToolRequested) -> ToolContext:
        """The session's workspace (created on first use), settings, and the call's identity:
        its tool_use id, its idempotency key (the same on every redelivery) and a logger."""
        workspace = workspace_for(self.settings.workspace_root, state.tenant_id, state.session_id)
        call_id = request.payload.tool_use_id
        key = str(ids.derive(self.key(request)))  # the ledger key, short enough for any API
        bound = {"session_id": state.session_id, "tenant_id": state.tenant_id, "tool_use_id": call_id}
        return ToolContext(
            session_id=state.session_id,
            workspace=workspace,
            settings=self.settings,
            call_id=call_id,
            tenant_id=state.tenant_id,
            idempotency_key=key,
            log=logging.LoggerAdapter(
                logging.getLogger(f"agentlog.tools.{request.payload.name}"), {**bound, "key": key}
            ),
        )

    def _tool(self, request: ev.ToolRequested, state: SessionState) -> Tool | ToolOutput:
        name = request.payload.name
        # A tool of an MCP server the session was offered.
        offered = mcp.tool_for(name, state, self.settings, self.mcp)
        if offered is not None:
            return offered
        allowed = {t.name for t in self.tools.allowed(state.config.tools)}
        tool = self.tools.get(name)
        if tool is None or name not in allowed:
            offer = ", ".join(sorted(allowed)) or "none"
            if tool is None and state.config.tools is not None and name in state.config.tools:
                # Offered to the model by a worker that loaded it, missing here: the roles'
                # tool modules differ. The model gets an answer it can read, never a hang.
                log.warning("tool %r is allowed in session %s but not loaded here", name, state.session_id)
            return ToolOutput(f"unknown tool {name!r}; the tools available are: {offer}", is_error=True)
        return tool

    async def _guard(self, coro: Any, name: str, limit_s: float | None = None) -> ToolOutput:
        """Await a tool's work within its time limit; every failure becomes an error result."""
        timeout = limit_s or self.settings.tool_timeout_s
        try:
            result: ToolOutput = await within(coro, timeout)
            return result
        except TimeoutError:
            return ToolOutput(f"{name} did not finish within {timeout:g} s and was stopped", is_error=True)
        except Exception as exc:
            log.warning("tool %s raised: %s", name, exc)
            return ToolOutput(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)

    async def run_tool(self, request: ev.ToolRequested, state: SessionState) -> ToolOutput:
        """Run the call as its class allows, given what the ledger knows of earlier attempts."""
        tool = self._tool(request, state)
        if isinstance(tool, ToolOutput):
            return tool
        if not getattr(tool, "uses_workspace", True):
            return await self._run_locked(tool, request, state)
        lock = self.workspace_locks.setdefault(state.session_id, asyncio.Lock())
        async with lock:
            try:
                # Across executors too: one that took the partition over waits for a call an
                # earlier owner still runs in the shared workspace.
                async with owners.workspace(
                    self.conn, state.tenant_id, state.session_id, self.settings.tool_timeout_s
                ):
                    return await self._run_locked(tool, request, state)
            except owners.WorkspaceBusy as exc:
                return ToolOutput(f"{exc}; the call was not run, try it again", is_error=True)

    async def _run_locked(self, tool: Tool, request: ev.ToolRequested, state: SessionState) -> ToolOutput:
        tool_input = dict(request.payload.input)
        ctx = self.context(state, request)
        kind: EffectClass = tool.effect_class(tool_input)
        key = self.key(request)
        # Reads and fetches need no look at the ledger here: a recorded outcome was re-emitted
        # before `perform`, and running one again is harmless.
        if kind == "write":
            # A start already recorded (by us before a crash, or by another executor): the
            # command may have run, so it is never run again.
            if (
                await self._ledger_call(ledger.start, key, self.kind, request, {"class": kind}, self.fence)
                is not None
            ):
                return ToolOutput(unknown(tool), is_error=True)
            failpoints.hit(f"{self.consumer}.after_start")
        elif kind == "guarded_write" and isinstance(tool, FunctionTool):
            return await self._checked(tool, tool_input, ctx, request)
        elif kind == "guarded_write":
            # The file is judged against a recorded plan before planning again: an applied Edit
            # no longer finds its old_string.
            earlier = await self._ledger_call(ledger.entry, key)
            intent = earlier.intent if earlier is not None and earlier.status == "started" else None
            return await self._guarded(tool, tool_input, ctx, request, intent)
        self.runs += 1
        limit = getattr(tool, "time_limit_s", None)
        return await self._guard(
            tool.run(tool_input, ctx), tool.name, limit(self.settings) if limit else None
        )

    async def _checked(
        self,
        tool: FunctionTool[..., Any],
        tool_input: dict[str, Any],
        ctx: ToolContext,
        request: ev.ToolRequested,
    ) -> ToolOutput:
        """A function tool's guarded write: its start is recorded before it runs; a start found
        recorded (a crash, or another executor) is judged by the tool's check."""
        earlier = await self._ledger_call(
            ledger.start, self.key(request), self.kind, request, {"class": "guarded_write"}, self.fence
        )
        if earlier is not None:
            verdict = await tool.confirm(tool_input, ctx)
            if verdict is None:
                return ToolOutput(unknown(tool), is_error=True)
            if verdict:
                return ToolOutput(
                    f"done: the {tool.name} call had taken effect before the executor stopped (its check"
                    " confirms it); it was not run again"
                )
        else:
            failpoints.hit(f"{self.consumer}.after_start")
        self.runs += 1
        return await self._guard(tool.run(tool_input, ctx), tool.name, tool.time_limit_s(self.settings))

    async def _guarded(
        self,
        tool: Any,
        tool_input: dict[str, Any],
        ctx: ToolContext,
        request: ev.ToolRequested,
        intent: dict[str, Any] | None,
    ) -> ToolOutput:
        if intent is not None:
            # A crash came between recording the plan and recording the outcome.
            current = await asyncio.to_thread(sha256_of, Path(intent["path"]))
            if current == intent["post_sha256"]:
                return ToolOutput(str(intent.get("summary", "done")))
            if current != intent["pre_sha256"]:
                return ToolOutput(
                    f"{tool.name} not applied: the file changed under the tool while it was being"
                    f" written (expected sha256 {intent['pre_sha256']} or {intent['post_sha256']},"
                    f" found {current})",
                    is_error=True,
                )
        plan = await asyncio.to_thread(tool.plan, tool_input, ctx)
        if isinstance(plan, ToolOutput):
            return plan
        assert isinstance(plan, WritePlan)
        if intent is None:
            intended = {**plan.intent(), "summary": plan.summary}
            other = await self._ledger_call(
                ledger.start, self.key(request), self.kind, request, intended, self.fence
            )
            if other is not None and other.intent is not None:
                # Another executor started it meanwhile: judge by the file, as after a crash.
                return await self._guarded(tool, tool_input, ctx, request, other.intent)
            failpoints.hit(f"{self.consumer}.after_start")
        self.runs += 1
        # No time limit here: a rename cannot be stopped halfway, and a "stopped" report
        # for a write that then lands would be false.
        try:
            applied: ToolOutput = await asyncio.to_thread(tool.apply, plan, ctx)
        except Exception as exc:
            return ToolOutput(f"{tool.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        return applied

    async def _bounded(
        self, request: ev.ToolRequested, output: ToolOutput
    ) -> tuple[ToolOutput, dict[str, Any]]:
        """A result over the size limit is stored whole; the model sees a cut copy saying so."""
        limit = self.settings.tool_result_max_chars
        if not isinstance(output.content, str) or len(output.content) <= limit:
            return output, {}
        whole = output.content
        digest = hashlib.sha256(whole.encode()).hexdigest()
        await self._ledger_call(ledger.store_output, request, whole, digest, self.fence)
        note = (
            f"\n[result cut: showing {limit} of {len(whole)} characters; the whole result is stored"
            f" as tool output sha256:{digest}]"
        )
        return ToolOutput(whole[:limit] + note, output.is_error), {
            "stored_sha256": digest,
            "total_chars": len(whole),
        }

    def span(self, request: ev.ToolRequested) -> tuple[str, SpanKind, dict[str, Any]]:
        name = request.payload.name
        known = mcp.label(name, self.tools.get(name) is not None)  # names are model output
        return (
            f"execute_tool {known}",
            SpanKind.INTERNAL,
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": request.payload.tool_use_id,
                "gen_ai.tool.type": "function",
                "gen_ai.conversation.id": request.session_id,
                "agentlog.turn_id": request.turn_id or "",
                "agentlog.step": request.step or 0,
            },
        )

    def describe(self, span: Span, outcome: Event) -> None:
        if isinstance(outcome, ev.ToolResult) and outcome.payload.is_error:
            span.set_status(Status(StatusCode.ERROR, "the tool returned an error result"))
            span.set_attribute("error.type", "tool_error")

    def measure(self, request: ev.ToolRequested, outcome: Event, attempts: int, seconds: float) -> None:
        name = request.payload.name
        label = mcp.label(name, self.tools.get(name) is not None)  # names are model output
        failed = isinstance(outcome, ev.ToolResult) and outcome.payload.is_error
        self.metrics.tool_calls.labels(label, "error" if failed else "ok").inc()
        self.metrics.tool_duration.labels(label).observe(seconds)

    async def perform(self, request: ev.ToolRequested, state: SessionState) -> tuple[Event, int]:
        started = time.monotonic()
        try:
            output = await self.run_tool(request, state)
        except ledger.SessionGone:
            output = ToolOutput("the session was deleted", is_error=True)
        found: Counter[str] = Counter()
        if self.settings.redact_secrets:
            # Before anything records the result: the ledger, tool_outputs and the log keep it.
            if redact.size(output.content) <= redact.WINDOW:
                clean, found = redact.redact_content(output.content)  # cheaper than a thread hop
            else:
                clean, found = await asyncio.to_thread(redact.redact_content, output.content)
            output = ToolOutput(clean, output.is_error)
            if found:
                log.info("redacted %d secret(s) from a %s result", sum(found.values()), request.payload.name)
        output, stored = await self._bounded(request, output)
        # After the cut, so that a long result still tells the model what was taken out.
        output = ToolOutput(redact.with_note(output.content, found), output.is_error)
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
                **stored,
            ),
            1,
        )
