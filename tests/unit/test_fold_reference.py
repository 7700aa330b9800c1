"""The linear fold equals the reference (the fold as it was, tests/unit/reference_fold.py) on any
history: redeliveries, reorderings, lost and forged events, approvals, sub-agents, timers; as a
whole fold, and event by event through `evolve`, every state staying as it was made."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.synthetic import tool_session
from eventstore import events as ev
from eventstore import ids
from eventstore.state import SessionState, empty, evolve, fold
from processors import reactor
from tests.unit import reference_fold as ref
from tests.unit.test_fold import T0, Sim

TASK = json.dumps({"description": "d", "prompt": "look it up"})


@dataclass
class RichSim(Sim):
    """test_fold's session, with approvals, Task calls run as sub-agents, and the reactor's
    timers (tool deadlines, sub-agent timeouts, expiry) firing when the clock jumps."""

    approvals: tuple[str, ...] = ()

    def start(self) -> None:
        if not self.log:
            self.log.append(
                ev.session_started(
                    self.sid,
                    model="agentlog-offline-1",
                    at=self.at(),
                    policy=self.policy,
                    approvals=list(self.approvals),
                    subagent_timeout_s=30,
                    ttl_s=600,
                    context_window=self.context_window,
                )
            )

    def ask(self, n: int, echoes: int, tasks: int) -> None:
        self.start()
        calls = [f'call Echo {{"text": "r{n}.{i}"}}' for i in range(echoes)]
        calls += [f"call Task {TASK}" for _ in range(tasks)]
        text = "\n".join([f"message {n}", *calls])
        self.log.append(ev.user_message(self.sid, text=text, idempotency_key=f"k{n}", at=self.at()))

    def decide(self, approved: bool) -> None:
        decided = {e.payload.approval_id for e in self.log if isinstance(e, ev.ApprovalDecided)}
        for asked in self.log:
            if isinstance(asked, ev.ApprovalRequested) and asked.payload.approval_id not in decided:
                p = asked.payload
                self.log.append(
                    ev.approval_decided(
                        self.sid,
                        tenant_id=asked.tenant_id,
                        turn_id=asked.turn_id,
                        step=asked.step,
                        approval_id=p.approval_id,
                        tool_use_id=p.tool_use_id,
                        approved=approved,
                        reason=None if approved else "no",
                        at=self.at(),
                    )
                )
                return

    def finish_subagent(self) -> None:
        done = {
            (e.payload.tool_use_id, e.payload.attempt)
            for e in self.log
            if isinstance(e, ev.SubagentCompleted)
        }
        for asked in self.log:
            if isinstance(asked, ev.SubagentRequested):
                p = asked.payload
                if (p.tool_use_id, p.attempt) in done:
                    continue
                completed = ev.SubagentCompletedPayload(
                    tool_use_id=p.tool_use_id,
                    child_session_id=p.child_session_id,
                    result="found",
                    attempt=p.attempt,
                )
                self.log.append(
                    ev.SubagentCompleted(
                        event_id=ids.derive(f"done/{p.tool_use_id}/{p.attempt}"),
                        session_id=self.sid,
                        turn_id=asked.turn_id,
                        step=asked.step,
                        occurred_at=self.at(),
                        payload=completed,
                    )
                )
                return

    def tick(self) -> None:
        self.clock += 3600
        at = self.at()
        ahead = fold(self.sid, self.unseen.values(), self.reactor_state)
        due = reactor.overdue(ahead, at, 60) + reactor.subagent_timeouts(ahead, at)
        expiry = reactor.expiry(ahead, at)
        for event in [*due, *([expiry] if expiry else [])]:
            self.log.append(event)
            self.unseen[event.event_id] = event


ACTIONS = ["user", "user+tools", "user+task", "react", "model", "tool", "approve", "deny", "subagent", "tick"]
scripts = st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=40)
policies = st.sampled_from(["enqueue", "interrupt", "reject"])
approvals = st.sampled_from([(), ("Echo",), ("Echo", "Task")])
windows = st.sampled_from([None, 1024])


def simulate(
    script: list[str],
    policy: str,
    asks: tuple[str, ...],
    verdicts: list[bool],
    window: int | None = None,
    sid: str = "s",
) -> list[ev.Event]:
    """The log of a session driven by the script, then left to settle, the human deciding
    by `verdicts` and sub-agents finishing; with a small `window`, compacting."""
    sim = RichSim(sid=sid, policy=policy, approvals=asks, context_window=window)
    sim.reactor_state = sim.model_state = sim.tool_state = empty(sid)
    n = 0
    for action in script:
        if action.startswith("user"):
            sim.ask(n, echoes=2 if action == "user+tools" else 0, tasks=1 if action == "user+task" else 0)
            n += 1
        elif action in ("approve", "deny"):
            sim.decide(action == "approve")
        elif action == "subagent":
            sim.finish_subagent()
        elif action == "tick":
            sim.tick()
        else:
            getattr(sim, f"{action}_one")()
    for approved in [*verdicts, True] * 3:
        sim.drain()
        size = len(sim.log)
        sim.decide(approved)
        sim.finish_subagent()
        if len(sim.log) == size:
            break
    return sim.log


def forged(sid: str, kind: str, n: int) -> ev.Event:
    """An event no honest writer of this session appends, or one of its rarer events."""
    at = T0
    if kind == "intruder start":
        start = ev.session_started(sid, model="other", tenant_id="intruder", at=at)
        return start.model_copy(update={"event_id": ids.derive(f"forged/{n}")})
    if kind == "intruder message":
        return ev.user_message(sid, text="mine", idempotency_key=f"forged/{n}", tenant_id="intruder", at=at)
    if kind == "other session":
        return ev.user_message("elsewhere", text="hi", idempotency_key=f"forged/{n}", at=at)
    if kind == "expired":
        return ev.SessionExpired(
            event_id=ids.derive(f"forged/{n}"),
            session_id=sid,
            occurred_at=at,
            payload=ev.SessionExpiredPayload(idle_s=1, ttl_s=1),
        )
    return ev.SessionDeleted(event_id=ids.derive(f"forged/{n}"), session_id=sid, occurred_at=at)


FORGERIES = ["intruder start", "intruder message", "other session", "expired", "deleted"]


@st.composite
def histories(draw: st.DrawFn) -> list[ev.Event]:
    """A simulated log, then damaged: events lost, neighbours swapped, copies redelivered
    anywhere, forged events slipped in."""
    verdicts = draw(st.lists(st.booleans(), max_size=3))
    log = simulate(draw(scripts), draw(policies), draw(approvals), verdicts, draw(windows))
    out = list(log)
    for _ in range(draw(st.integers(0, 3)) if out else 0):
        del out[draw(st.integers(0, len(out) - 1))]
    for _ in range(draw(st.integers(0, 3)) if len(out) > 1 else 0):
        i = draw(st.integers(0, len(out) - 2))
        out[i], out[i + 1] = out[i + 1], out[i]
    for _ in range(draw(st.integers(0, 8)) if log else 0):
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(log)))
    for n, kind in enumerate(draw(st.lists(st.sampled_from(FORGERIES), max_size=2))):
        out.insert(draw(st.integers(0, len(out))), forged("s", kind, n))
    return out


def plain(state: SessionState) -> dict[str, Any]:
    """The state's fields, its settings among them (the reference has no `config`), its
    collections as the tuples and frozenset the reference holds."""
    fields = dict(state.config) | dict(state)
    del fields["config"]
    fields.update(messages=tuple(state.messages), turns=tuple(state.turns), seen=frozenset(state.seen))
    return fields


def assert_same(state: SessionState, expected: ref.SessionState) -> None:
    assert plain(state) == dict(expected)
    assert state.queued() == expected.queued()
    assert [state.turn(t.turn_id) for t in expected.turns] == list(expected.turns)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_the_fold_equals_the_reference_on_any_history(history: list[ev.Event]) -> None:
    state, expected = fold("s", history), ref.fold("s", history)
    assert_same(state, expected)
    assert state.public() == expected.model_dump(mode="json", exclude={"seen"})


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_evolve_equals_the_reference_event_by_event_and_no_state_changes_later(
    history: list[ev.Event], data: st.DataObject
) -> None:
    states, expected = [fold("s", [])], [ref.fold("s", [])]
    for event in history:
        states.append(evolve(states[-1], event))
        expected.append(ref.evolve(expected[-1], event))
        assert_same(states[-1], expected[-1])
    # The reactor folds ahead of a state it keeps: a branch from any earlier state is right,
    # and neither the branch nor what followed changed any state made before.
    if history:
        i = data.draw(st.integers(0, len(history)))
        branch = data.draw(st.lists(st.sampled_from(history), max_size=5))
        assert_same(fold("s", branch, states[i]), ref.fold("s", branch, expected[i]))
    for state, reference in zip(states, expected, strict=True):
        assert_same(state, reference)


def test_a_long_session_with_late_answers_to_its_old_turns_equals_the_reference() -> None:
    # Past 32 turns and 1,024 messages the collections are tries several levels deep; late
    # answers to old turns (paid for, not in the transcript) change turns deep inside them.
    log = tool_session("s", 300, window=8)
    answers = [e for e in log if isinstance(e, ev.AssistantMessage)]
    late = [e.model_copy(update={"event_id": ids.derive(f"late/{i}")}) for i, e in enumerate(answers[:200:7])]
    history = [*log[:1500], *late, *log[1500:], *log[::11]]
    state, expected = fold("s", []), ref.fold("s", [])
    for i, event in enumerate(history):
        state, expected = evolve(state, event), ref.evolve(expected, event)
        if i % 250 == 0:
            assert_same(state, expected)
    assert len(state.messages) > 1024 and len(state.turns) == 300
    assert_same(state, expected)
    assert_same(fold("s", history), expected)
