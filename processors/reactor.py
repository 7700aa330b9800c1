"""The pure reactor: what must follow a session's state. No I/O, no clock (time is passed in).

Reactions are derived from the state, not from the event alone, so they are idempotent:
once the reactor has folded its own reactions, the same state asks for nothing more, and
every reaction has a deterministic id, so a reaction appended twice is one event.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventstore import context, ids, lineage, untrusted
from eventstore import events as ev
from eventstore.events import Block
from eventstore.models import OFFLINE_MODEL
from eventstore.state import CLOSED, SessionState, Turn, evolve
from processors.model import results

TERMINAL_STOPS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "refusal", "model_context_window_exceeded"}
)


def _envelope(state: SessionState, turn: Turn, at: datetime, step: int | None = None) -> dict[str, Any]:
    return {
        "session_id": state.session_id,
        "tenant_id": state.tenant_id,
        "turn_id": turn.turn_id,
        "step": step,
        "correlation_id": turn.turn_id,
        "occurred_at": at,
    }


def model_request(
    state: SessionState,
    turn: Turn,
    step: int,
    at: datetime,
    tool_results: list[Block] | None = None,
    attempt: int = 0,
) -> ev.ModelRequested:
    """The model call of a turn's step; its ledger key is session/turn/step, and so is its id
    (with the attempt: asked again, it is a new event for the same call)."""
    return ev.ModelRequested(
        event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, step, "model_requested", attempt)),
        **_envelope(state, turn, at, step),
        payload=ev.ModelRequestedPayload(
            model=state.config.model or OFFLINE_MODEL, tool_results=tool_results or []
        ),
    )


def compaction_request(
    state: SessionState, turn: Turn, step: int, at: datetime, plan: context.Plan
) -> ev.CompactionRequested:
    """The compaction a turn's step needs before its model call; keyed session/turn/step, so
    its ledger key is too, and a redelivery never makes a second summary."""
    return ev.CompactionRequested(
        event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, step, "compaction_requested")),
        **_envelope(state, turn, at, step),
        payload=ev.CompactionRequestedPayload(
            model=state.config.model or OFFLINE_MODEL,
            through=plan.through,
            clear_before=plan.clear_before,
            tokens_before=plan.tokens_before,
        ),
    )


def _unknown(reason: str) -> str:
    return f"outcome unknown: {reason} while this tool was running; it may or may not have taken effect"


def _closing_results(turn: Turn, reason: str) -> list[Block]:
    """A result for every tool_use of the step: the real one if it came, else an error saying
    why (`outcome unknown` for a tool that was requested, `not run` for one that was not)."""
    out = []
    for tool_use_id in turn.tool_use_ids():
        got = turn.result_for(tool_use_id)
        if got is None:
            why = _unknown(reason) if tool_use_id in turn.requested else f"not run: {reason}"
            got = ev.tool_result_block(tool_use_id, why, True)
        out.append(got)
    return out


def _fail(state: SessionState, turn: Turn, reason: str, at: datetime) -> list[ev.Event]:
    """End a turn as failed; requested tools that never answered get an error result."""
    out: list[ev.Event] = [
        _error_result(state, turn, tool_use_id, _unknown(reason), at)
        for tool_use_id in sorted(turn.requested)
        if turn.result_for(tool_use_id) is None
    ]
    out.append(
        ev.TurnFailed(
            event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, "turn_failed")),
            **_envelope(state, turn, at, turn.step or None),
            payload=ev.TurnFailedPayload(reason=reason, tool_results=_closing_results(turn, reason)),
        )
    )
    return out


def _complete(state: SessionState, turn: Turn, at: datetime) -> list[ev.Event]:
    return [
        ev.TurnCompleted(
            event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, "turn_completed")),
            **_envelope(state, turn, at, turn.step),
            payload=ev.TurnCompletedPayload(
                stop_reason=turn.stop_reason,
                tool_results=_closing_results(
                    turn, f"the model stopped with {turn.stop_reason} before asking for tools"
                ),
            ),
        )
    ]


def _next_call(
    state: SessionState,
    turn: Turn,
    step: int,
    tool_results: list[Block],
    at: datetime,
    tool_tokens: Mapping[str, int],
) -> list[ev.Event]:
    """The next model call of a turn, unless a limit ends the turn first, or, when the call
    would not fit the context window, the compaction it needs first (once per step)."""
    if step > state.config.max_steps:
        return _fail(
            state, turn, f"step limit reached: {state.config.max_steps} model calls in this turn", at
        )
    if state.config.token_budget is not None and state.tokens_used() >= state.config.token_budget:
        reason = f"token budget exhausted: {state.tokens_used()} of {state.config.token_budget} tokens used"
        return _fail(state, turn, reason, at)
    asked = state.compaction
    if asked is None or (asked.turn_id, asked.step) != (turn.turn_id, step):
        plan = context.plan(state, tool_results, tool_tokens)
        if plan is not None:
            return [compaction_request(state, turn, step, at, plan)]
    return [model_request(state, turn, step, at, tool_results)]


def _start_next(state: SessionState, at: datetime, tool_tokens: Mapping[str, int]) -> list[ev.Event]:
    queued = state.queued()
    if state.current_turn is not None or not queued:
        return []
    turn = queued[0]
    started = ev.TurnStarted(
        event_id=ids.derive(ids.event_key(state.session_id, turn.turn_id, "turn_started")),
        **_envelope(state, turn, at),
    )
    # The call is decided on the state with the turn started: its message is in the transcript.
    running = evolve(state, started)
    return [started, *_next_call(running, running.turn(turn.turn_id) or turn, 1, [], at, tool_tokens)]


def tool_request(state: SessionState, turn: Turn, index: int, block: Block, at: datetime) -> ev.ToolRequested:
    """The request to run the `index`th tool_use block of a turn's current step."""
    tool_input = block.get("input")
    return ev.ToolRequested(
        event_id=ids.derive(
            ids.event_key(state.session_id, turn.turn_id, turn.step, "tool_requested", index)
        ),
        **_envelope(state, turn, at, turn.step),
        payload=ev.ToolRequestedPayload(
            tool_use_id=str(block.get("id")),
            name=str(block.get("name")),
            input=tool_input if isinstance(tool_input, dict) else {},
        ),
    )


def _approval_request(state: SessionState, turn: Turn, block: Block, at: datetime) -> ev.ApprovalRequested:
    tool_use_id = str(block.get("id"))
    approval_id = ev.approval_id_for(state.session_id, turn.turn_id, turn.step, tool_use_id)
    tool_input = block.get("input")
    return ev.ApprovalRequested(
        event_id=ids.derive(ids.event_key(state.session_id, "approval_requested", approval_id)),
        **_envelope(state, turn, at, turn.step),
        payload=ev.ApprovalRequestedPayload(
            approval_id=approval_id,
            tool_use_id=tool_use_id,
            name=str(block.get("name")),
            input=tool_input if isinstance(tool_input, dict) else {},
        ),
    )


def _error_result(
    state: SessionState, turn: Turn, tool_use_id: str, text: str, at: datetime
) -> ev.ToolResult:
    return ev.tool_result(
        state.session_id,
        turn_id=turn.turn_id,
        step=turn.step,
        tool_use_id=tool_use_id,
        content=text,
        is_error=True,
        tenant_id=state.tenant_id,
        at=at,
    )


def subagent_request(
    state: SessionState, turn: Turn, block: Block, attempt: int, at: datetime
) -> ev.SubagentRequested:
    """An attempt of a Task call: a child session of its own, under the parent's limits."""
    tool_use_id = str(block.get("id"))
    task_input = block.get("input") if isinstance(block.get("input"), dict) else {}
    assert isinstance(task_input, dict)
    return ev.SubagentRequested(
        event_id=ids.derive(
            ids.event_key(
                state.session_id, turn.turn_id, turn.step, "subagent_requested", tool_use_id, attempt
            )
        ),
        **_envelope(state, turn, at, turn.step),
        payload=ev.SubagentRequestedPayload(
            tool_use_id=tool_use_id,
            # The child is the parent's tenant's, its id scoped as a client's would be.
            child_session_id=ids.scoped_session_id(
                state.tenant_id, ev.child_session_id(state.session_id, tool_use_id, attempt)
            ),
            prompt=str(task_input.get("prompt", "")),
            description=str(task_input.get("description", ""))[:500],
            # At most the parent's tools, under the parent's rules and limits.
            tools=lineage.child_tools(state, task_input.get("tools")),
            model=state.config.model or OFFLINE_MODEL,
            limits=lineage.inherited(state),
            attempt=attempt,
            max_attempts=state.config.subagent_attempts,
            timeout_s=state.config.subagent_timeout_s,
            depth=state.depth + 1,
        ),
    )


def _task_refusal(state: SessionState, block: Block, started: int) -> str | None:
    """Why a Task call may not start a sub-agent (either model), or None."""
    if state.config.tools is not None and "Task" not in state.config.tools:
        return "Task is not among this session's tools"
    task_input = block.get("input")
    prompt = task_input.get("prompt") if isinstance(task_input, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        return "Task needs a non-empty `prompt`"
    if state.depth >= state.config.max_depth:
        return (
            f"depth limit: a sub-agent at depth {state.depth} may not start another"
            f" (max_depth {state.config.max_depth})"
        )
    if started >= state.config.max_subagents:
        return (
            f"sub-agent budget spent: this session already started {started}"
            f" (max_subagents {state.config.max_subagents})"
        )
    return None


def _task(state: SessionState, turn: Turn, block: Block, started: int, at: datetime) -> list[ev.Event]:
    """A Task call starts a sub-agent (queue model), unless a limit answers it with an error."""
    tool_use_id = str(block.get("id"))
    refusal = _task_refusal(state, block, started)
    if refusal is not None:
        return [_error_result(state, turn, tool_use_id, refusal, at)]
    return [subagent_request(state, turn, block, 1, at)]


def _needs_approval(state: SessionState, block: Block, approve: frozenset[str]) -> bool:
    """Whether a call waits for a human: the session's list, a tool that always asks, a tool
    the session guards once untrusted content came in (and it has), a WebFetch off the list."""
    name = block.get("name")
    mcp = state.mcp_tool(name)
    return (
        name in state.config.approvals
        or name in approve
        or (mcp is not None and mcp.approval)
        or (state.untrusted and name in state.config.approve_after_untrusted)
        or (
            name == "WebFetch"
            and untrusted.fetch_needs_approval(block.get("input"), state.config.webfetch_allow)
        )
    )


def _tool_requests(state: SessionState, turn: Turn, at: datetime, approve: frozenset[str]) -> list[ev.Event]:
    """Requests for the step's tool calls not yet asked for; a call that needs approval (the
    session's list, or a tool that always asks) first asks a human, runs once approved,
    and is answered with an error once denied."""
    out: list[ev.Event] = []
    started = 0
    for index, block in enumerate(turn.tool_uses):
        tool_use_id = str(block.get("id"))
        if tool_use_id in turn.requested or turn.result_for(tool_use_id) is not None:
            continue
        if _needs_approval(state, block, approve):
            decision = turn.decision(tool_use_id)
            if decision is None:
                if tool_use_id not in turn.awaiting:
                    out.append(_approval_request(state, turn, block, at))
                continue
            approved, reason = decision
            if not approved:
                declined = "the user declined to run this tool" + (f": {reason}" if reason else "")
                out.append(_error_result(state, turn, tool_use_id, declined, at))
                continue
        if block.get("name") == "Task":
            if state.config.subagent_mode == "queue":
                reactions = _task(state, turn, block, state.subagents_started + started, at)
                started += sum(isinstance(r, ev.SubagentRequested) for r in reactions)
                out += reactions
                continue
            # The HTTP model runs in the executor, under the same limits.
            refusal = _task_refusal(state, block, state.subagents_started + started)
            if refusal is not None:
                out.append(_error_result(state, turn, tool_use_id, refusal, at))
                continue
            started += 1
        out.append(tool_request(state, turn, index, block, at))
    return out


def _continue(
    state: SessionState, turn: Turn, at: datetime, approve: frozenset[str], tool_tokens: Mapping[str, int]
) -> list[ev.Event]:
    """What follows a running turn whose model has answered."""
    if turn.stop_reason == "tool_use":
        if not turn.tool_uses:
            return _fail(state, turn, "the model stopped for tool_use but sent no tool_use block", at)
        if len(turn.tool_use_ids()) != len(turn.tool_uses):
            return _fail(state, turn, "the model sent tool_use blocks without unique string ids", at)
        missing = _tool_requests(state, turn, at, approve)
        if missing:
            return missing
        if len(turn.results) < len(turn.tool_uses):
            return []  # waiting on tools
        results = _closing_results(turn, "no result came")
        return _next_call(state, turn, turn.step + 1, results, at, tool_tokens)
    if turn.stop_reason == "pause_turn":
        # A paused long-running turn: send the conversation again to let the model continue.
        return _next_call(state, turn, turn.step + 1, [], at, tool_tokens)
    return _complete(state, turn, at)


def react(
    state: SessionState,
    at: datetime,
    approve: frozenset[str] = frozenset(),
    tool_tokens: Mapping[str, int] | None = None,
) -> list[ev.Event]:
    """The events that must follow this state now (empty when it waits on an effect).
    `approve` names tools whose every call waits for a human (`@tool(approval=True)`);
    `tool_tokens` the estimated size of each tool's definition (for the context window)."""
    sizes = tool_tokens or {}
    closed = state.status in CLOSED
    refused = [
        event
        for turn in state.queued()
        if turn.refused or closed
        for event in _fail(state, turn, turn.refused or f"session {state.status}", at)
    ]
    if refused:
        return refused
    current = state.turn(state.current_turn)
    if current is None:
        return _start_next(state, at, sizes)
    if closed:
        return _fail(state, current, f"session {state.status}", at)
    if current.interrupted:
        return _fail(state, current, "interrupted by a newer user message (policy interrupt)", at)
    if current.model_pending or state.compacting(current.turn_id):
        return []
    if current.step == 0:
        return _next_call(state, current, 1, [], at, sizes)
    return _continue(state, current, at, approve, sizes)


def overdue(state: SessionState, at: datetime, deadline_s: float) -> list[ev.Event]:
    """Error results for the requested tools of a running step that have not answered within
    `deadline_s` of being asked for (an executor lost for good must not brick the session)."""
    turn = state.turn(state.current_turn)
    if turn is None or turn.tools_asked_at is None or not turn.requested:
        return []
    if (at - turn.tools_asked_at).total_seconds() < deadline_s:
        return []
    why = _unknown(f"no tool executor answered within {deadline_s:g} s")
    return [
        _error_result(state, turn, tool_use_id, why, at)
        for tool_use_id in sorted(turn.requested)
        if turn.result_for(tool_use_id) is None and turn.task_for(tool_use_id) is None
    ]


def model_overdue(state: SessionState, at: datetime, deadline_s: float) -> list[ev.Event]:
    """The failure of a turn whose model call got no answer within `deadline_s` (nothing else
    happens in a session while its model is asked, so its last activity is the request): no
    model worker answering, for whatever reason, must not leave the session waiting forever.
    The failure has the id a model worker's own would have, so the two are one event."""
    turn = state.turn(state.current_turn)
    if turn is None or turn.status != "running" or state.last_activity_at is None:
        return []
    if not (turn.model_pending or state.compacting(turn.turn_id)):  # a summary call is one too
        return []
    if (at - state.last_activity_at).total_seconds() < deadline_s:
        return []
    request = model_request(state, turn, turn.step, at)
    reason = f"no model worker answered step {turn.step} within {deadline_s:g} s"
    return [results.failed(request, reason, at)]


def model_unclaimed(state: SessionState, at: datetime, after_s: float) -> list[ev.Event]:
    """The model call of a running step asked for once more when nothing happened in the session
    for `after_s` since it was asked (the caller checks that no worker took it: the ledger has
    no row for it). Once only: the second request is in the state's history after that."""
    turn = state.turn(state.current_turn)
    if turn is None or turn.status != "running" or not turn.model_pending or state.last_activity_at is None:
        return []
    if state.compacting(turn.turn_id) or (at - state.last_activity_at).total_seconds() < after_s:
        return []
    again = model_request(state, turn, turn.step, at, attempt=1)
    return [] if str(again.event_id) in state.seen else [again]


def subagent_timeouts(state: SessionState, at: datetime) -> list[ev.Event]:
    """Task attempts past their timeout: abandoned for a new attempt, or, when the attempts
    are spent, answered with an error saying so. A late answer of an abandoned one is ignored."""
    turn = state.turn(state.current_turn)
    if turn is None:
        return []
    out: list[ev.Event] = []
    for task in turn.tasks:
        if turn.result_for(task.tool_use_id) is not None:
            continue
        if (at - task.requested_at).total_seconds() < task.timeout_s:
            continue
        if task.attempt < task.max_attempts:
            block = next(b for b in turn.tool_uses if b.get("id") == task.tool_use_id)
            out.append(subagent_request(state, turn, block, task.attempt + 1, at))
        else:
            text = (
                f"the sub-agent did not finish: {task.attempt} attempt(s) of {task.timeout_s:g} s each"
                " timed out"
            )
            out.append(_error_result(state, turn, task.tool_use_id, text, at))
    return out


def expiry(state: SessionState, at: datetime) -> ev.SessionExpired | ev.SessionDeleted | None:
    """The expiry of an idle session past its TTL, if it is due at `at` (an ephemeral
    session is deleted instead: nothing of it is kept)."""
    if state.config.ttl_s is None or state.status != "idle" or state.last_activity_at is None:
        return None
    idle = (at - state.last_activity_at).total_seconds()
    if idle < state.config.ttl_s:
        return None
    if state.config.ephemeral:
        return ev.SessionDeleted(
            event_id=ids.derive(ids.event_key(state.session_id, "session_deleted")),
            session_id=state.session_id,
            tenant_id=state.tenant_id,
            occurred_at=at,
        )
    return ev.SessionExpired(
        # Keyed by the last activity: an expiry that lost a race with a new message is void,
        # and the session can expire later under another id.
        event_id=ids.derive(
            ids.event_key(state.session_id, "session_expired", state.last_activity_at.isoformat())
        ),
        session_id=state.session_id,
        tenant_id=state.tenant_id,
        occurred_at=at,
        payload=ev.SessionExpiredPayload(idle_s=int(idle), ttl_s=state.config.ttl_s),
    )


def settle(
    state: SessionState,
    at: datetime,
    limit: int = 64,
    approve: frozenset[str] = frozenset(),
    tool_tokens: Mapping[str, int] | None = None,
) -> tuple[SessionState, list[ev.Event]]:
    """React until the state asks for nothing more; returns the state with the reactions folded.

    A reaction can enable another (a turn's completion starts the next queued turn), and the
    reactor will see its own reactions again only as duplicates, so it settles them at once.
    """
    out: list[ev.Event] = []
    for _ in range(limit):
        reactions = react(state, at, approve, tool_tokens)
        if not reactions:
            return state, out
        for reaction in reactions:
            state = evolve(state, reaction)
        out += reactions
    raise RuntimeError(f"reactor did not settle after {limit} rounds for session {state.session_id}")
