"""The one definition of a session: SessionState, evolve and fold. Pure: no I/O, no clock.

The fold is idempotent: an event whose id was already applied changes nothing, so a log
holding duplicates folds to the same state as one without.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from eventstore import events as ev
from eventstore import tokens, untrusted
from eventstore.config import SessionConfig
from eventstore.events import Block, Event, StopReason, Usage
from eventstore.mcp import McpTool
from eventstore.persistent import HashSet, Keyed, Vector

TurnStatus = Literal["queued", "running", "completed", "failed"]
SessionStatus = Literal["new", "idle", "running", "expired", "deleted"]
CLOSED: frozenset[str] = frozenset({"expired", "deleted"})


class _Value(BaseModel):
    """A frozen model with a cheap copy: `replace` shares every value it does not replace."""

    model_config = ConfigDict(frozen=True)

    def replace(self, update: dict[str, Any]) -> Self:
        """This value with some fields replaced (as `model_copy(update=...)`, unvalidated). The
        fold makes a copy or two per event: pydantic's copy was most of its time."""
        out = self.__class__.__new__(self.__class__)
        values = self.__dict__.copy()
        values.update(update)
        _set(out, "__dict__", values)
        _set(out, "__pydantic_fields_set__", self.__pydantic_fields_set__ | update.keys())
        _set(out, "__pydantic_extra__", None)
        _set(out, "__pydantic_private__", None)
        return out


_set = object.__setattr__
_DEFAULTS = SessionConfig()


class Message(BaseModel):
    """One message of the conversation, in the Messages API shape."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    content: tuple[Block, ...]

    def as_api(self) -> dict[str, Any]:
        """The message as the Messages API takes it."""
        return {"role": self.role, "content": list(self.content)}

    # Estimated once per message (a message never changes; a new one is made, never a copy
    # with other content): deciding whether a call fits must not dump a long history each step.
    @cached_property
    def tokens(self) -> int:
        """Its estimated tokens as sent (eventstore/tokens.py)."""
        return tokens.estimate(self.as_api())

    @cached_property
    def tool_results(self) -> int:
        """How many tool_result blocks it holds."""
        return sum(1 for b in self.content if b.get("type") == "tool_result")

    @cached_property
    def cleared_tokens(self) -> int:
        """Its estimated tokens with its tool results cleared."""
        return tokens.estimate(tokens.cleared(self.as_api()))


class TaskAttempt(BaseModel):
    """The current attempt of a Task call: the child session running it, since when."""

    model_config = ConfigDict(frozen=True)

    tool_use_id: str
    attempt: int
    child_session_id: str
    requested_at: datetime
    timeout_s: float
    max_attempts: int


class Turn(_Value):
    """A user turn: queued until it starts, then running until it completes or fails.

    Within a step: the model is asked (`model_pending`), answers (`stop_reason`, and the
    `tool_uses` blocks it asked for), the reactor requests each tool (`requested`), and the
    results come back (`results`, tool_result blocks in arrival order).
    """

    model_config = ConfigDict(frozen=True)

    turn_id: str
    status: TurnStatus
    user_content: tuple[Block, ...]
    step: int = 0
    model_pending: bool = False
    stop_reason: StopReason | None = None
    error: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal | None = Decimal(0)  # None: a call could not be priced
    tool_uses: tuple[Block, ...] = ()
    requested: frozenset[str] = frozenset()
    results: tuple[Block, ...] = ()
    # Tool calls waiting for a human (approval requested), and the decisions made.
    awaiting: frozenset[str] = frozenset()
    decisions: tuple[tuple[str, bool, str | None], ...] = ()
    # When the step's latest tool was requested: tools that never answer are given up on
    # some time after it.
    tools_asked_at: datetime | None = None
    # Task calls of the step running as sub-agents (their latest attempt).
    tasks: tuple[TaskAttempt, ...] = ()
    # Set when a newer message interrupts this turn (policy `interrupt`).
    interrupted: bool = False
    # Why this turn must fail without starting (policy `reject`, a closed session).
    refused: str | None = None
    # When it started running (its `turn_started`).
    started_at: datetime | None = None
    # The trace context of the message that asked for it (the turn's trace hangs from it).
    traceparent: str | None = None

    def tool_use_ids(self) -> list[str]:
        """The ids of the step's tool_use blocks, in order; blocks without a string id, or
        repeating one, are left out (the reactor fails such a step)."""
        seen: list[str] = []
        for block in self.tool_uses:
            tool_use_id = block.get("id")
            if isinstance(tool_use_id, str) and tool_use_id and tool_use_id not in seen:
                seen.append(tool_use_id)
        return seen

    def task_for(self, tool_use_id: str) -> TaskAttempt | None:
        """The running attempt of a Task call, if it is one."""
        for task in self.tasks:
            if task.tool_use_id == tool_use_id:
                return task
        return None

    def decision(self, tool_use_id: str) -> tuple[bool, str | None] | None:
        """(approved, reason) of the human's decision on this call, if made."""
        for decided_id, approved, reason in self.decisions:
            if decided_id == tool_use_id:
                return approved, reason
        return None

    def result_for(self, tool_use_id: str) -> Block | None:
        """The tool_result block answering this tool_use id, if it has come."""
        for block in self.results:
            if block.get("tool_use_id") == tool_use_id:
                return block
        return None


class SessionState(_Value):
    """Everything a session is, folded from its events."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    tenant_id: str = "default"
    # The settings it was started with (the defaults until then: one value, shared).
    config: SessionConfig = Field(default_factory=lambda: _DEFAULTS)
    # Set once a result of a tool that brings in strangers' content arrived (eventstore/untrusted.py).
    untrusted: bool = False
    # Its lineage, as its start recorded it.
    depth: int = 0
    parent_session_id: str | None = None
    parent_tool_use_id: str | None = None
    forked_from: str | None = None
    subagents_started: int = 0
    # The MCP tools its first model call with any was offered (fixed from then on; None: none
    # listed yet).
    mcp_tools: tuple[McpTool, ...] | None = None
    status: SessionStatus = "new"
    # What grows with the session is in persistent collections, so that an event costs the
    # same in a long session as in a short one. Not a mutable accumulator inside `fold`:
    # `evolve` is the step everywhere, and the reactor folds its unread reactions ahead of a
    # cached state it keeps, so every state must stay intact and cheap to extend.
    messages: Vector[Message] = Vector()
    turns: Keyed[Turn] = Keyed()
    current_turn: str | None = None
    usage: Usage = Usage()
    cost_usd: Decimal | None = Decimal(0)  # None: a call could not be priced
    turn_count: int = 0
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    event_count: int = 0
    seen: HashSet[str] = HashSet()
    # Compaction (eventstore/context.py): the model is sent `summary` in place of the messages
    # before `compacted_through`, and tool results before `cleared_before` cleared. The latest
    # compaction asked for, and whether its answer is still to come.
    summary: str | None = None
    compacted_through: int = 0
    cleared_before: int = 0
    compaction: ev.CompactionRequested | None = None
    compaction_pending: bool = False

    def compacting(self, turn_id: str | None) -> bool:
        """Whether this turn waits for a compaction before its next model call."""
        return self.compaction_pending and self.compaction is not None and self.compaction.turn_id == turn_id

    def turn(self, turn_id: str | None) -> Turn | None:
        """The turn with this id, if the session has it."""
        return self.turns.get(turn_id) if turn_id is not None else None

    def mcp_tool(self, name: object) -> McpTool | None:
        """The MCP tool of this name the session was offered, if any."""
        return next((t for t in self.mcp_tools or () if t.name == name), None)

    def queued(self) -> tuple[Turn, ...]:
        """Turns waiting to start, oldest first."""
        return tuple(t for t in self.turns.open() if t.status == "queued")

    def tokens_used(self) -> int:
        """Every token the session's model calls were billed for, cached ones included."""
        u = self.usage
        return u.input_tokens + u.output_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens

    def public(self) -> dict[str, Any]:
        """A JSON-ready view, without the bookkeeping of seen ids; its settings are fields of
        it, as they were before they were one `config`."""
        return {
            **self.config.model_dump(mode="json"),
            **self.model_dump(mode="json", exclude={"seen", "config"}),
        }


def empty(session_id: str) -> SessionState:
    """The state of a session before its first event."""
    return SessionState(session_id=session_id)


def put_turn(turns: Keyed[Turn], turn: Turn) -> Keyed[Turn]:
    """The turns with this one added, or in the place of its older version."""
    # Unfinished turns are listed apart: finding them must not scan a long session's turns.
    return turns.put(turn.turn_id, turn, turn.status in ("queued", "running"))


def _replace_turn(state: SessionState, turn: Turn) -> Keyed[Turn]:
    return put_turn(state.turns, turn)


def _ended_status(state: SessionState, turns: Keyed[Turn]) -> SessionStatus:
    if state.status in CLOSED:
        return state.status
    return "running" if turns.open() else "idle"


def _with_results(messages: Vector[Message], results: list[Block]) -> Vector[Message]:
    """All tool results of a step go back in one user message."""
    return messages.append(Message(role="user", content=tuple(results))) if results else messages


def _refusal(state: SessionState) -> str | None:
    if state.status in CLOSED:
        return f"session {state.status}"
    busy = state.current_turn is not None or bool(state.queued())
    if state.config.policy == "reject" and busy:
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
            return state.replace(
                {
                    "config": p.config(),
                    "depth": p.depth,
                    "parent_session_id": p.parent_session_id,
                    "parent_tool_use_id": p.parent_tool_use_id,
                    "forked_from": p.forked_from,
                    "mcp_tools": tuple(p.mcp_tools) if p.mcp_tools is not None else None,
                    # A fork of a session that had fetched pages has their content too.
                    "untrusted": state.untrusted or p.untrusted or untrusted.in_history(p.history),
                    "messages": Vector.of(
                        Message(role=m["role"], content=tuple(m["content"])) for m in p.history
                    )
                    if state.status == "new"
                    else state.messages,
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
            if state.config.policy == "interrupt" and current is not None and refused is None:
                turns = _replace_turn(state, current.replace({"interrupted": True}))
            return state.replace(
                {
                    "turns": put_turn(turns, turn),
                    "tenant_id": state.tenant_id if state.status != "new" else event.tenant_id,
                    "status": state.status if state.status in CLOSED else "running",
                    "started_at": state.started_at or event.occurred_at,
                }
            )
        case ev.TurnStarted():
            queued = state.turn(event.turn_id)
            if queued is None or queued.status != "queued" or queued.refused or state.current_turn:
                return state
            started = queued.replace({"status": "running", "started_at": event.occurred_at})
            return state.replace(
                {
                    "turns": _replace_turn(state, started),
                    "current_turn": queued.turn_id,
                    "messages": state.messages.append(Message(role="user", content=queued.user_content)),
                    "turn_count": state.turn_count + 1,
                    "status": "running",
                }
            )
        case ev.ModelRequested(payload=p):
            running = state.turn(event.turn_id)
            step = event.step or 1
            if running is None or running.status != "running" or step <= running.step:
                return state
            pending = running.replace(
                {
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
            return state.replace(
                {
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
                # The MCP tools the session's first call with any was offered: fixed from then on.
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
                late = asked.replace(turn_billed)
                return state.replace({"turns": _replace_turn(state, late), **billed})
            answered = asked.replace(
                {
                    "model_pending": False,
                    "stop_reason": p.stop_reason,
                    "tool_uses": tuple(b for b in p.content if b.get("type") == "tool_use"),
                    **turn_billed,
                }
            )
            return state.replace(
                {
                    "turns": _replace_turn(state, answered),
                    "messages": state.messages.append(Message(role="assistant", content=tuple(p.content))),
                    **billed,
                }
            )
        case ev.ToolRequested(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in {b.get("id") for b in asking.tool_uses}:
                return state
            requested = asking.replace(
                {
                    "requested": asking.requested | {p.tool_use_id},
                    # The deadline for tools that never answer runs from the latest request
                    # (after an approval, say), not from the model's answer.
                    "tools_asked_at": max(asking.tools_asked_at or event.occurred_at, event.occurred_at),
                }
            )
            # A Task run by the executor (the HTTP model) counts against the sub-agent budget.
            tasks_started = state.subagents_started + (1 if p.name == "Task" else 0)
            return state.replace(
                {"turns": _replace_turn(state, requested), "subagents_started": tasks_started}
            )
        case ev.ApprovalRequested(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in asking.tool_use_ids():
                return state
            awaiting = asking.replace({"awaiting": asking.awaiting | {p.tool_use_id}})
            return state.replace({"turns": _replace_turn(state, awaiting)})
        case ev.ApprovalDecided(payload=p):
            asking = _in_step(state, event)
            if asking is None:
                return state
            if p.tool_use_id not in asking.awaiting or asking.decision(p.tool_use_id) is not None:
                return state
            decided = asking.replace(
                {"decisions": (*asking.decisions, (p.tool_use_id, p.approved, p.reason))}
            )
            return state.replace({"turns": _replace_turn(state, decided)})
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
            started = asking.replace({"tasks": tasks, "requested": asking.requested | {p.tool_use_id}})
            return state.replace(
                {
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
            answered = waiting.replace({"results": (*waiting.results, block)})
            return state.replace({"turns": _replace_turn(state, answered)})
        case ev.ToolResult(payload=p):
            waiting = _in_step(state, event)
            if waiting is None:
                return state
            # Any call of the step may be answered (by its executor, or by the reactor with an
            # error: a denial, a limit); the first answer is the answer.
            if p.tool_use_id not in waiting.tool_use_ids() or waiting.result_for(p.tool_use_id) is not None:
                return state
            block = ev.tool_result_block(p.tool_use_id, p.content, p.is_error)
            answered = waiting.replace({"results": (*waiting.results, block)})
            called = next((b.get("name") for b in waiting.tool_uses if b.get("id") == p.tool_use_id), None)
            return state.replace(
                {
                    "turns": _replace_turn(state, answered),
                    "untrusted": state.untrusted or untrusted.is_untrusted(called),
                }
            )
        case ev.TurnCompleted() | ev.TurnFailed():
            open_turn = state.turn(event.turn_id)
            if open_turn is None or open_turn.status in ("completed", "failed"):
                return state
            ended = open_turn.replace(
                {
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
            return state.replace(
                {
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
                or state.compacting(event.turn_id)
                or event.step != asking.step + 1
            ):
                return state
            return state.replace({"compaction": event, "compaction_pending": True})
        case ev.ContextCompacted(payload=p):
            return _compacted(state, event, p)
        case ev.SessionExpired():
            # An expiry that raced a new message (now queued or running) is void.
            return state.replace({"status": "expired"}) if state.status == "idle" else state
        case ev.SessionDeleted():
            return state.replace({"status": "deleted"})
        case _:
            return state


def _compacted(state: SessionState, event: Event, p: ev.ContextCompactedPayload) -> SessionState:
    """A compaction made: paid for in any case; it changes what the model is sent unless a
    later one went further (messages only grow, so an earlier plan stays valid)."""
    asked = state.compaction
    answers = asked is not None and (asked.turn_id, asked.step) == (event.turn_id, event.step)
    update: dict[str, Any] = {
        "usage": state.usage + p.usage,
        "cost_usd": ev.add_cost(state.cost_usd, p.cost_usd),
        "compaction_pending": state.compaction_pending and not answers,
    }
    turn = state.turn(event.turn_id)
    if turn is not None:
        billed = turn.replace(
            {"usage": turn.usage + p.usage, "cost_usd": ev.add_cost(turn.cost_usd, p.cost_usd)}
        )
        update["turns"] = _replace_turn(state, billed)
    # The summary stands for the messages before one of the assistant's: the roles alternate.
    fits = p.through < len(state.messages) and state.messages[p.through].role == "assistant"
    if p.through > state.compacted_through and fits:
        update.update(compacted_through=p.through, summary=p.summary)
    if p.clear_before > state.cleared_before and p.clear_before <= len(state.messages):
        update["cleared_before"] = p.clear_before
    return state.replace(update)


def evolve(state: SessionState, event: Event) -> SessionState:
    """The state after one more event; a duplicate (already seen) id changes nothing."""
    key = str(event.event_id)
    if key in state.seen or event.session_id != state.session_id:
        return state
    applied = _apply(state, event)
    at = event.occurred_at
    update = {
        "seen": state.seen.add(key),
        "event_count": state.event_count + 1,
        "last_activity_at": at
        if state.last_activity_at is None or at > state.last_activity_at
        else state.last_activity_at,
        # As the projection has it: the earliest producer time of any event.
        "started_at": at if applied.started_at is None or at < applied.started_at else applied.started_at,
    }
    if applied is state:
        return state.replace(update)
    # A copy `_apply` just made, seen by no one else yet: completed in place (one copy per event).
    applied.__dict__.update(update)
    applied.__pydantic_fields_set__.update(update)
    return applied


def fold(session_id: str, events: Iterable[Event], start: SessionState | None = None) -> SessionState:
    """Fold events, in log order, into the session's state."""
    state = start or empty(session_id)
    for event in events:
        state = evolve(state, event)
    return state
