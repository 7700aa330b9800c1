"""The fold as it was before it was made linear (tuples and a frozenset, copied per event),
kept verbatim as the reference the persistent fold must equal on any history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from eventstore import events as ev
from eventstore import untrusted
from eventstore.events import Block, Event, TurnPolicy, Usage
from eventstore.mcp import McpServer, McpTool
from eventstore.state import CLOSED, Message, SessionStatus, TaskAttempt, Turn

__all__ = ["Message", "SessionState", "TaskAttempt", "Turn", "empty", "evolve", "fold"]


class SessionState(BaseModel):
    """Everything a session is, folded from its events."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    tenant_id: str = "default"
    model: str | None = None
    system: str | None = None
    metadata: dict[str, Any] = {}
    policy: TurnPolicy = "enqueue"
    max_steps: int = 25
    token_budget: int | None = None
    tools: tuple[str, ...] | None = None
    approvals: tuple[str, ...] = ()
    approve_after_untrusted: tuple[str, ...] = ()
    webfetch_allow: tuple[str, ...] | None = None
    untrusted: bool = False
    subagent_mode: Literal["queue", "http"] = "queue"
    subagent_timeout_s: float = 60.0
    subagent_attempts: int = 2
    max_subagents: int = 16
    max_depth: int = 2
    depth: int = 0
    parent_session_id: str | None = None
    parent_tool_use_id: str | None = None
    subagents_started: int = 0
    agent: ev.AgentUsed | None = None
    mcp_servers: dict[str, McpServer] = {}
    mcp_tools: tuple[McpTool, ...] | None = None
    forked_from: str | None = None
    ephemeral: bool = False
    ttl_s: int | None = None
    max_tokens: int = 4096
    context_window: int | None = None
    status: SessionStatus = "new"
    messages: tuple[Message, ...] = ()
    turns: tuple[Turn, ...] = ()
    current_turn: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal | None = Decimal(0)
    turn_count: int = 0
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    event_count: int = 0
    seen: frozenset[str] = frozenset()
    summary: str | None = None
    compacted_through: int = 0
    cleared_before: int = 0
    compaction: ev.CompactionRequested | None = None
    compaction_pending: bool = False

    def turn(self, turn_id: str | None) -> Turn | None:
        """The turn with this id, if the session has it."""
        for t in self.turns:
            if t.turn_id == turn_id:
                return t
        return None

    def queued(self) -> tuple[Turn, ...]:
        """Turns waiting to start, oldest first."""
        return tuple(t for t in self.turns if t.status == "queued")

    def tokens_used(self) -> int:
        """Every token the session's model calls were billed for, cached ones included."""
        u = self.usage
        return u.input_tokens + u.output_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens


def empty(session_id: str) -> SessionState:
    """The state of a session before its first event."""
    return SessionState(session_id=session_id)


def _replace_turn(state: SessionState, turn: Turn) -> tuple[Turn, ...]:
    return tuple(turn if t.turn_id == turn.turn_id else t for t in state.turns)


def _ended_status(state: SessionState, turns: tuple[Turn, ...]) -> SessionStatus:
    if state.status in CLOSED:
        return state.status
    return "running" if any(t.status in ("queued", "running") for t in turns) else "idle"


def _with_results(messages: tuple[Message, ...], results: list[Block]) -> tuple[Message, ...]:
    """All tool results of a step go back in one user message."""
    return (*messages, Message(role="user", content=tuple(results))) if results else messages


def _refusal(state: SessionState) -> str | None:
    if state.status in CLOSED:
        return f"session {state.status}"
    busy = state.current_turn is not None or bool(state.queued())
    if state.policy == "reject" and busy:
        return "rejected: a turn is already running (policy reject)"
    return None


def _in_step(state: SessionState, event: Event) -> Turn | None:
    """The running turn this event belongs to, if it is about the turn's current step."""
    turn = state.turn(event.turn_id)
    if turn is None or turn.status != "running" or event.step != turn.step:
        return None
    return turn


def _apply(state: SessionState, event: Event) -> SessionState:
    """One branch per event type; the event is known to be new."""
    match event:
        case ev.SessionStarted(payload=p) if state.status != "new" and event.tenant_id != state.tenant_id:
            return state  # another tenant cannot take a session over by starting it again
        case ev.SessionStarted(payload=p):
            return state.model_copy(
                update={
                    "model": p.model,
                    "system": p.system,
                    "metadata": p.metadata,
                    "policy": p.policy,
                    "max_steps": p.max_steps,
                    "token_budget": p.token_budget,
                    "tools": tuple(p.tools) if p.tools is not None else None,
                    "approvals": tuple(p.approvals),
                    "approve_after_untrusted": tuple(p.approve_after_untrusted),
                    "webfetch_allow": tuple(p.webfetch_allow) if p.webfetch_allow is not None else None,
                    "untrusted": state.untrusted or p.untrusted or untrusted.in_history(p.history),
                    "subagent_mode": p.subagent_mode,
                    "subagent_timeout_s": p.subagent_timeout_s,
                    "subagent_attempts": p.subagent_attempts,
                    "max_subagents": p.max_subagents,
                    "max_depth": p.max_depth,
                    "depth": p.depth,
                    "parent_session_id": p.parent_session_id,
                    "parent_tool_use_id": p.parent_tool_use_id,
                    "agent": p.agent,
                    "mcp_servers": p.mcp_servers,
                    "mcp_tools": tuple(p.mcp_tools) if p.mcp_tools is not None else None,
                    "forked_from": p.forked_from,
                    "ephemeral": p.ephemeral,
                    "messages": tuple(Message(role=m["role"], content=tuple(m["content"])) for m in p.history)
                    if state.status == "new"
                    else state.messages,
                    "ttl_s": p.ttl_s,
                    "max_tokens": p.max_tokens,
                    "context_window": p.context_window,
                    "tenant_id": event.tenant_id,
                    "status": "idle" if state.status == "new" else state.status,
                    "started_at": state.started_at or event.occurred_at,
                }
            )
        case ev.UserMessage(payload=p):
            assert event.turn_id is not None
            if state.turn(event.turn_id) is not None:
                return state
            refused = _refusal(state)
            if state.status != "new" and event.tenant_id != state.tenant_id:
                refused = "refused: the message's tenant does not own this session"
            turn = Turn(
                turn_id=event.turn_id,
                status="queued",
                user_content=tuple(p.content),
                refused=refused,
                traceparent=event.traceparent,
            )
            turns = state.turns
            current = state.turn(state.current_turn)
            if state.policy == "interrupt" and current is not None and refused is None:
                turns = _replace_turn(state, current.model_copy(update={"interrupted": True}))
            return state.model_copy(
                update={
                    "turns": (*turns, turn),
                    "tenant_id": state.tenant_id if state.status != "new" else event.tenant_id,
                    "status": state.status if state.status in CLOSED else "running",
                    "started_at": state.started_at or event.occurred_at,
                }
            )
        case ev.TurnStarted():
            queued = state.turn(event.turn_id)
            if queued is None or queued.status != "queued" or queued.refused or state.current_turn:
                return state
            started = queued.model_copy(update={"status": "running", "started_at": event.occurred_at})
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, started),
                    "current_turn": queued.turn_id,
                    "messages": (*state.messages, Message(role="user", content=queued.user_content)),
                    "turn_count": state.turn_count + 1,
                    "status": "running",
                }
            )
        case ev.ModelRequested(payload=p):
            running = state.turn(event.turn_id)
            step = event.step or 1
            if running is None or running.status != "running" or step <= running.step:
                return state
            pending = running.model_copy(
                update={
                    "step": step,
                    "model_pending": True,
                    "stop_reason": None,
                    "tool_uses": (),
                    "requested": frozenset(),
                    "results": (),
                    "awaiting": frozenset(),
                    "decisions": (),
                    "tasks": (),
                }
            )
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, pending),
                    "messages": _with_results(state.messages, p.tool_results),
                }
            )
        case ev.AssistantMessage(payload=p):
            asked = state.turn(event.turn_id)
            if asked is None:
                return state
            billed = {
                "usage": state.usage + p.usage,
                "cost_usd": ev.add_cost(state.cost_usd, p.cost_usd),
                # (Added with MCP tools: the first offered list is kept.)
                "mcp_tools": state.mcp_tools
                if state.mcp_tools is not None or p.mcp_tools is None
                else tuple(p.mcp_tools),
            }
            turn_billed = {
                "usage": asked.usage + p.usage,
                "cost_usd": ev.add_cost(asked.cost_usd, p.cost_usd),
            }
            accepting = (
                asked.status == "running"
                and asked.model_pending
                and not asked.interrupted
                and state.status not in CLOSED
                and (event.step is None or event.step == asked.step)
            )
            if not accepting:
                # A late answer (the turn was interrupted or ended): paid for, not in the transcript.
                late = asked.model_copy(update=turn_billed)
                return state.model_copy(update={"turns": _replace_turn(state, late), **billed})
            answered = asked.model_copy(
                update={
                    "model_pending": False,
                    "stop_reason": p.stop_reason,
                    "tool_uses": tuple(b for b in p.content if b.get("type") == "tool_use"),
                    **turn_billed,
                }
            )
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, answered),
                    "messages": (
                        *state.messages,
                        Message(role="assistant", content=tuple(p.content)),
                    ),
                    **billed,
                }
            )
        case ev.ToolRequested(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in {b.get("id") for b in asking.tool_uses}:
                return state
            requested = asking.model_copy(
                update={
                    "requested": asking.requested | {p.tool_use_id},
                    # The deadline for tools that never answer runs from the latest request
                    # (after an approval, say), not from the model's answer.
                    "tools_asked_at": max(asking.tools_asked_at or event.occurred_at, event.occurred_at),
                }
            )
            # A Task run by the executor (the HTTP model) counts against the sub-agent budget.
            tasks_started = state.subagents_started + (1 if p.name == "Task" else 0)
            return state.model_copy(
                update={"turns": _replace_turn(state, requested), "subagents_started": tasks_started}
            )
        case ev.ApprovalRequested(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in asking.tool_use_ids():
                return state
            awaiting = asking.model_copy(update={"awaiting": asking.awaiting | {p.tool_use_id}})
            return state.model_copy(update={"turns": _replace_turn(state, awaiting)})
        case ev.ApprovalDecided(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in asking.awaiting or asking.decision(p.tool_use_id) is not None:
                return state
            decided = asking.model_copy(
                update={"decisions": (*asking.decisions, (p.tool_use_id, p.approved, p.reason))}
            )
            return state.model_copy(update={"turns": _replace_turn(state, decided)})
        case ev.SubagentRequested(payload=p):
            asking = _in_step(state, event)
            if asking is None or p.tool_use_id not in asking.tool_use_ids():
                return state
            earlier = asking.task_for(p.tool_use_id)
            if asking.result_for(p.tool_use_id) is not None or (earlier and earlier.attempt >= p.attempt):
                return state
            task = TaskAttempt(
                tool_use_id=p.tool_use_id,
                attempt=p.attempt,
                child_session_id=p.child_session_id,
                requested_at=event.occurred_at,
                timeout_s=p.timeout_s,
                max_attempts=p.max_attempts,
            )
            tasks = (*(t for t in asking.tasks if t.tool_use_id != p.tool_use_id), task)
            started = asking.model_copy(
                update={"tasks": tasks, "requested": asking.requested | {p.tool_use_id}}
            )
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, started),
                    "subagents_started": state.subagents_started + (1 if p.attempt == 1 else 0),
                }
            )
        case ev.SubagentCompleted(payload=p):
            waiting = _in_step(state, event)
            if waiting is None or waiting.result_for(p.tool_use_id) is not None:
                return state
            attempt = waiting.task_for(p.tool_use_id)
            if attempt is None or attempt.attempt != p.attempt:
                return state  # an abandoned attempt's late answer
            block = ev.tool_result_block(p.tool_use_id, p.result, p.is_error)
            answered = waiting.model_copy(update={"results": (*waiting.results, block)})
            return state.model_copy(update={"turns": _replace_turn(state, answered)})
        case ev.ToolResult(payload=p):
            waiting = _in_step(state, event)
            if waiting is None:
                return state
            # Any call of the step may be answered (by its executor, or by the reactor with an
            # error: a denial, a limit); the first answer is the answer.
            if p.tool_use_id not in waiting.tool_use_ids() or waiting.result_for(p.tool_use_id) is not None:
                return state
            block = ev.tool_result_block(p.tool_use_id, p.content, p.is_error)
            answered = waiting.model_copy(update={"results": (*waiting.results, block)})
            called = next((b.get("name") for b in waiting.tool_uses if b.get("id") == p.tool_use_id), None)
            return state.model_copy(
                update={
                    "turns": _replace_turn(state, answered),
                    "untrusted": state.untrusted or untrusted.is_untrusted(called),
                }
            )
        case ev.TurnCompleted() | ev.TurnFailed():
            open_turn = state.turn(event.turn_id)
            if open_turn is None or open_turn.status in ("completed", "failed"):
                return state
            ended = open_turn.model_copy(
                update={
                    "status": "failed" if isinstance(event, ev.TurnFailed) else "completed",
                    "model_pending": False,
                    "error": event.payload.reason if isinstance(event, ev.TurnFailed) else None,
                    "stop_reason": event.payload.stop_reason if isinstance(event, ev.TurnCompleted) else None,
                    "tool_uses": (),
                    "requested": frozenset(),
                    "results": (),
                    "awaiting": frozenset(),
                    "decisions": (),
                    "tasks": (),
                }
            )
            turns = _replace_turn(state, ended)
            was_current = state.current_turn == open_turn.turn_id
            return state.model_copy(
                update={
                    "turns": turns,
                    "current_turn": None if was_current else state.current_turn,
                    "messages": _with_results(state.messages, event.payload.tool_results)
                    if was_current
                    else state.messages,
                    "status": _ended_status(state, turns),
                }
            )
        case ev.CompactionRequested():
            asking = state.turn(event.turn_id)
            if (
                asking is None
                or asking.status != "running"
                or asking.model_pending
                or (
                    state.compaction_pending
                    and state.compaction
                    and state.compaction.turn_id == event.turn_id
                )
                or event.step != asking.step + 1
            ):
                return state
            return state.model_copy(update={"compaction": event, "compaction_pending": True})
        case ev.ContextCompacted(payload=p):
            made = state.compaction
            answers = made is not None and (made.turn_id, made.step) == (event.turn_id, event.step)
            update: dict[str, Any] = {
                "usage": state.usage + p.usage,
                "cost_usd": ev.add_cost(state.cost_usd, p.cost_usd),
                "compaction_pending": state.compaction_pending and not answers,
            }
            paid = state.turn(event.turn_id)
            if paid is not None:
                update["turns"] = _replace_turn(
                    state,
                    paid.model_copy(
                        update={
                            "usage": paid.usage + p.usage,
                            "cost_usd": ev.add_cost(paid.cost_usd, p.cost_usd),
                        }
                    ),
                )
            if (
                p.through > state.compacted_through
                and p.through < len(state.messages)
                and state.messages[p.through].role == "assistant"
            ):
                update.update(compacted_through=p.through, summary=p.summary)
            if state.cleared_before < p.clear_before <= len(state.messages):
                update["cleared_before"] = p.clear_before
            return state.model_copy(update=update)
        case ev.SessionExpired():
            # An expiry that raced a new message (now queued or running) is void.
            return state.model_copy(update={"status": "expired"}) if state.status == "idle" else state
        case ev.SessionDeleted():
            return state.model_copy(update={"status": "deleted"})
        case _:
            return state


def evolve(state: SessionState, event: Event) -> SessionState:
    """The state after one more event; a duplicate (already seen) id changes nothing."""
    key = str(event.event_id)
    if key in state.seen or event.session_id != state.session_id:
        return state
    applied = _apply(state, event)
    return applied.model_copy(
        update={
            "seen": state.seen | {key},
            "event_count": state.event_count + 1,
            "last_activity_at": event.occurred_at
            if state.last_activity_at is None or event.occurred_at > state.last_activity_at
            else state.last_activity_at,
            # As the projection has it: the earliest producer time of any event.
            "started_at": event.occurred_at
            if applied.started_at is None or event.occurred_at < applied.started_at
            else applied.started_at,
        }
    )


def fold(session_id: str, events: Iterable[Event], start: SessionState | None = None) -> SessionState:
    """Fold events, in log order, into the session's state."""
    state = start or empty(session_id)
    for event in events:
        state = evolve(state, event)
    return state
