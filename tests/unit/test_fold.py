"""Invariant 1 on the pure core: folding the log, folding it with duplicates, and the reactor's
incremental state (which folds its own reactions early) are the same state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import context
from eventstore import events as ev
from eventstore.models import OFFLINE_MODEL
from eventstore.state import Message, SessionState, empty, evolve, fold
from processors import reactor
from processors.model import results
from processors.model.offline import answer
from processors.model.port import ModelRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Sim:
    """A session driven through the pure core: the api appends, the reactor reacts (as the
    worker does: its state is the log's fold, its own unread reactions folded on top), the
    model answers (the offline model, so `call` lines ask for tools), a tool executor answers."""

    sid: str = "s"
    policy: str = "enqueue"
    log: list[ev.Event] = field(default_factory=list)
    reactor_state: SessionState = field(default_factory=lambda: empty("s"))
    reactor_pos: int = 0
    unseen: dict[object, ev.Event] = field(default_factory=dict)
    model_state: SessionState = field(default_factory=lambda: empty("s"))
    model_pos: int = 0
    tool_state: SessionState = field(default_factory=lambda: empty("s"))
    tool_pos: int = 0
    clock: int = 0
    # A small window makes the session compact (tests/unit/test_compaction.py).
    context_window: int | None = None

    def at(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock)

    def user(self, n: int, calls: int = 0) -> None:
        if not self.log:
            self.log.append(
                ev.session_started(
                    self.sid,
                    model=OFFLINE_MODEL,
                    at=self.at(),
                    policy=self.policy,
                    context_window=self.context_window,
                )
            )
        text = "\n".join([f"message {n}", *(f'call Echo {{"text": "r{n}.{i}"}}' for i in range(calls))])
        self.log.append(ev.user_message(self.sid, text=text, idempotency_key=f"k{n}", at=self.at()))

    def react_one(self) -> None:
        if self.reactor_pos >= len(self.log):
            return
        event = self.log[self.reactor_pos]
        self.reactor_pos += 1
        self.unseen.pop(event.event_id, None)
        before = self.reactor_state
        self.reactor_state = evolve(before, event)
        if self.reactor_state is before:
            return
        ahead = fold(self.sid, self.unseen.values(), self.reactor_state)
        _, reactions = reactor.settle(ahead, self.at())
        self.log += reactions
        self.unseen.update((r.event_id, r) for r in reactions)

    def model_one(self) -> None:
        while self.model_pos < len(self.log):
            event = self.log[self.model_pos]
            self.model_pos += 1
            self.model_state = evolve(self.model_state, event)
            turn = self.model_state.turn(event.turn_id)
            if isinstance(event, ev.CompactionRequested) and self.model_state.compacting(event.turn_id):
                self.log.append(compact(self.model_state, event, self.at()))
                return
            if (
                isinstance(event, ev.ModelRequested)
                and turn
                and turn.model_pending
                and turn.step == event.step
            ):
                request = ModelRequest(model=event.payload.model, messages=context.view(self.model_state))
                self.log.append(results.answered(event, answer(request), self.at()))
                return

    def tool_one(self) -> None:
        while self.tool_pos < len(self.log):
            event = self.log[self.tool_pos]
            self.tool_pos += 1
            self.tool_state = evolve(self.tool_state, event)
            if isinstance(event, ev.ToolRequested):
                self.log.append(
                    ev.tool_result(
                        self.sid,
                        turn_id=event.turn_id,
                        step=event.step,
                        tool_use_id=event.payload.tool_use_id,
                        content=str(event.payload.input.get("text")),
                        at=self.at(),
                    )
                )
                return

    def drain(self) -> None:
        for _ in range(1000):
            size = len(self.log)
            while self.reactor_pos < len(self.log):
                self.react_one()
            self.model_one()
            self.tool_one()
            if len(self.log) == size and self.reactor_pos == len(self.log):
                return


def compact(state: SessionState, request: ev.CompactionRequested, at: datetime) -> ev.ContextCompacted:
    """The compaction the model worker makes, with the offline model writing the summary."""
    p, summary, response = request.payload, state.summary, None
    if p.through > state.compacted_through:
        asked = context.summary_prompt(state, p.through)
        response = answer(ModelRequest(model=p.model, system=context.SUMMARY_SYSTEM, messages=asked))
        summary = context.clip_summary(str(response.content[0]["text"]), state)
    after = context.compacted(state, max(p.through, state.compacted_through), p.clear_before, summary)
    return results.compacted(request, summary, context.request_tokens(after, [], 0), response, at)


actions = st.lists(st.sampled_from(["user", "user+tools", "react", "model", "tool"]), min_size=1, max_size=40)


def run(script: list[str], sid: str = "s", policy: str = "enqueue") -> Sim:
    sim = Sim(
        sid=sid,
        policy=policy,
        reactor_state=empty(sid),
        model_state=empty(sid),
        tool_state=empty(sid),
    )
    n = 0
    for action in script:
        if action.startswith("user"):
            sim.user(n, calls=2 if action == "user+tools" else 0)
            n += 1
        elif action == "react":
            sim.react_one()
        elif action == "model":
            sim.model_one()
        else:
            sim.tool_one()
    sim.drain()
    return sim


def assert_transcript_valid(messages: Sequence[Message]) -> None:
    """Invariant 7: every tool_use is answered by exactly one tool_result, in the next message."""
    answered: list[str] = []
    for i, message in enumerate(messages):
        uses = [b["id"] for b in message.content if b.get("type") == "tool_use"]
        if message.role == "assistant" and uses:
            following = messages[i + 1] if i + 1 < len(messages) else None
            assert following is not None and following.role == "user", f"tool_use at {i} is never answered"
            got = [b["tool_use_id"] for b in following.content if b.get("type") == "tool_result"]
            assert sorted(got) == sorted(uses)
        answered += [b["tool_use_id"] for b in message.content if b.get("type") == "tool_result"]
    assert len(answered) == len(set(answered))


policies = st.sampled_from(["enqueue", "interrupt", "reject"])


@settings(max_examples=150, deadline=None)
@given(actions, policies, st.data())
def test_log_fold_equals_reactor_state_with_any_duplicates(
    script: list[str], policy: str, data: st.DataObject
) -> None:
    sim = run(script, policy=policy)
    folded = fold("s", sim.log)
    assert folded == sim.reactor_state
    # Redelivery: copies of any events, appended anywhere after their first occurrence.
    noisy = list(sim.log)
    for _ in range(data.draw(st.integers(0, 10)) if sim.log else 0):
        i = data.draw(st.integers(0, len(sim.log) - 1))
        first = next(n for n, e in enumerate(noisy) if e.event_id == sim.log[i].event_id)
        noisy.insert(data.draw(st.integers(first + 1, len(noisy))), sim.log[i])
    assert fold("s", noisy) == folded
    # Any prefix folded first, then the rest, is the same state.
    k = data.draw(st.integers(0, len(sim.log)))
    assert fold("s", sim.log[k:], fold("s", sim.log[:k])) == folded


@settings(max_examples=150, deadline=None)
@given(actions, policies)
def test_every_turn_ends_and_every_tool_use_is_answered_once(script: list[str], policy: str) -> None:
    state = fold("s", run(script, policy=policy).log)
    users = sum(1 for a in script if a.startswith("user"))
    assert len(state.turns) == users
    assert all(t.status in ("completed", "failed") for t in state.turns)
    if policy == "enqueue":
        assert all(t.status == "completed" for t in state.turns)
        assert state.turn_count == users
    assert state.status == ("idle" if users else "new")
    assert state.current_turn is None
    assert_transcript_valid(state.messages)


def test_duplicate_event_returns_the_same_state() -> None:
    started = ev.session_started("s", model="m", at=T0)
    state = evolve(empty("s"), started)
    assert evolve(state, started) is state
    assert state.event_count == 1
