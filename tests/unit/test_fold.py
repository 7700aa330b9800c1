"""Invariant 1 on the pure core: folding the log, folding it with duplicates, and the reactor's
incremental state (which folds its own reactions early) are the same state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import events as ev
from eventstore.state import SessionState, empty, evolve, fold
from processors import reactor
from processors.model import results
from processors.model.offline import answer
from processors.model.port import ModelRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Sim:
    """A session driven through the pure core: api appends, reactor reacts, model answers."""

    sid: str = "s"
    log: list[ev.Event] = field(default_factory=list)
    reactor_state: SessionState = field(default_factory=lambda: empty("s"))
    reactor_pos: int = 0
    model_state: SessionState = field(default_factory=lambda: empty("s"))
    model_pos: int = 0
    clock: int = 0

    def at(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock)

    def user(self, n: int) -> None:
        if not self.log:
            self.log.append(ev.session_started(self.sid, model="agentlog-offline-1", at=self.at()))
        self.log.append(ev.user_message(self.sid, text=f"message {n}", idempotency_key=f"k{n}", at=self.at()))

    def react_one(self) -> None:
        if self.reactor_pos >= len(self.log):
            return
        event = self.log[self.reactor_pos]
        self.reactor_pos += 1
        before = self.reactor_state
        self.reactor_state = evolve(before, event)
        if self.reactor_state is before:
            return
        self.reactor_state, reactions = reactor.settle(self.reactor_state, self.at())
        self.log += reactions

    def model_one(self) -> None:
        while self.model_pos < len(self.log):
            event = self.log[self.model_pos]
            self.model_pos += 1
            self.model_state = evolve(self.model_state, event)
            if isinstance(event, ev.ModelRequested):
                response = answer(
                    ModelRequest(
                        model=event.payload.model, messages=[m.as_api() for m in self.model_state.messages]
                    )
                )
                self.log.append(results.answered(event, response, self.at()))
                return

    def drain(self) -> None:
        for _ in range(1000):
            size = len(self.log)
            while self.reactor_pos < len(self.log):
                self.react_one()
            self.model_one()
            if len(self.log) == size and self.reactor_pos == len(self.log):
                return


actions = st.lists(st.sampled_from(["user", "react", "model"]), min_size=1, max_size=40)


def run(script: list[str], sid: str = "s") -> Sim:
    sim = Sim(sid=sid, reactor_state=empty(sid), model_state=empty(sid))
    n = 0
    for action in script:
        if action == "user":
            sim.user(n)
            n += 1
        elif action == "react":
            sim.react_one()
        else:
            sim.model_one()
    sim.drain()
    return sim


@settings(max_examples=150, deadline=None)
@given(actions, st.data())
def test_log_fold_equals_reactor_state_with_any_duplicates(script: list[str], data: st.DataObject) -> None:
    sim = run(script)
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


@settings(max_examples=100, deadline=None)
@given(actions)
def test_every_turn_ends_and_every_message_is_answered(script: list[str]) -> None:
    state = fold("s", run(script).log)
    users = script.count("user")
    assert state.turn_count == users
    assert all(t.status == "completed" for t in state.turns)
    assert [m.role for m in state.messages] == ["user", "assistant"] * users
    assert state.status == ("idle" if users else "new")
    assert state.current_turn is None


def test_duplicate_event_returns_the_same_state() -> None:
    started = ev.session_started("s", model="m", at=T0)
    state = evolve(empty("s"), started)
    assert evolve(state, started) is state
    assert state.event_count == 1
