"""Sessions longer than the context window, on the pure core: the token estimate, the fold of
a compaction, the reactor asking for one (once per call) before a call that would not fit,
and a long session whose every model call fits its small window."""

from __future__ import annotations

import json
import math
from typing import Any

from agentlog.fake_anthropic import estimate_tokens
from eventstore import context, ids, tokens
from eventstore import events as ev
from eventstore.persistent import Vector
from eventstore.state import Message, SessionState, evolve, fold
from processors import reactor
from processors.model import results
from processors.tools.registry import Echo, Registry
from tests.unit.test_fold import T0, Sim

WINDOW = 1024


def configured(state: SessionState, settings: dict[str, Any]) -> SessionState:
    """The state with some of its settings replaced."""
    return state.model_copy(update={"config": state.config.model_copy(update=settings)})


def long_session(turns: int, window: int | None = WINDOW) -> Sim:
    """A session of `turns` turns with two tool calls each, driven to the end."""
    sim = Sim(context_window=window)
    for n in range(turns):
        sim.user(n, calls=2)
        sim.drain()
    return sim


def pairs_valid(messages: list[dict[str, Any]]) -> bool:
    """Roles alternate from a user message, and every tool_result answers a tool_use of the
    message just before it (what the Messages API requires)."""
    for i, message in enumerate(messages):
        if message["role"] != ("user" if i % 2 == 0 else "assistant"):
            return False
        results = [b["tool_use_id"] for b in message["content"] if b.get("type") == "tool_result"]
        asked = {b["id"] for b in messages[i - 1]["content"] if b.get("type") == "tool_use"} if i else set()
        if not set(results) <= asked:
            return False
    return True


def test_the_estimate_is_json_characters_over_four_and_never_below_the_fake_servers() -> None:
    assert tokens.estimate("abcdefgh") == math.ceil(len('"abcdefgh"') / 4) == 3
    assert tokens.estimate({"a": [1, 2]}) == math.ceil(len(json.dumps({"a": [1, 2]})) / 4)
    state = long_session(3, window=None).model_state
    tools = Registry([Echo()])
    request = {
        "system": state.config.system,
        "messages": context.view(state),
        "tools": tools.definitions(None),
    }
    ours = context.request_tokens(state, [], context.overhead(state, tools.definition_tokens()))
    assert estimate_tokens(request) <= ours <= estimate_tokens(request) * 1.2


def test_a_long_session_compacts_and_every_call_fits_its_window() -> None:
    sim = long_session(12)
    compactions = [e for e in sim.log if isinstance(e, ev.ContextCompacted)]
    assert compactions and any(c.payload.summary for c in compactions)
    assert all(
        isinstance(e, ev.TurnCompleted) for e in sim.log if isinstance(e, ev.TurnCompleted | ev.TurnFailed)
    )
    # Every model call's request, as the model worker builds it from the state then.
    state = fold("s", [])
    budget = None
    for event in sim.log:
        state = evolve(state, event)
        budget = context.budget(state)
        if isinstance(event, ev.ModelRequested):
            sent = context.view(state)
            assert context.request_tokens(state, [], 0) <= budget
            assert pairs_valid(sent)
    final = fold("s", sim.log)
    # Every message is kept; the model is sent a summary in place of the oldest ones.
    assert len(final.messages) == 12 * 4 and final.compacted_through > 0
    assert context.view(final)[0]["content"][0]["text"].startswith("<summary of the conversation so far>")
    assert len(context.view(final)) < len(final.messages)


def test_one_summary_per_step_and_the_reactor_waits_for_it() -> None:
    sim = long_session(12)
    requests = [e for e in sim.log if isinstance(e, ev.CompactionRequested)]
    keys = [(e.turn_id, e.step) for e in requests]
    assert keys and len(keys) == len(set(keys))
    # Right after a request, the reactor asks for nothing: it waits for the compaction.
    first = sim.log.index(requests[0])
    waiting = fold("s", sim.log[: first + 1])
    assert waiting.compacting(requests[0].turn_id)
    assert reactor.react(waiting, T0) == []
    # After it, the model call goes out even if the call would still not fit (never a loop).
    answered = fold("s", sim.log[: first + 2])
    assert isinstance(sim.log[first + 1], ev.ContextCompacted)
    tiny = configured(answered, {"context_window": 100})
    assert [type(e) for e in reactor.react(tiny, T0)] == [ev.ModelRequested]


def with_big_results(state: SessionState, chars: int) -> SessionState:
    """The state with every tool result's content `chars` long (as a Read of a large file)."""

    def big(message: Message) -> Message:
        blocks = tuple(
            {**b, "content": "x" * chars} if b.get("type") == "tool_result" else b for b in message.content
        )
        return Message(role=message.role, content=blocks)  # a new one: its estimate is its own

    return state.model_copy(update={"messages": Vector.of(big(m) for m in state.messages)})


def test_old_tool_results_are_cleared_first_keeping_the_newest_and_the_pairing() -> None:
    state = with_big_results(fold("s", long_session(3, window=None).log), 4000)
    state = configured(state, {"context_window": 7000, "max_tokens": 500})
    plan = context.plan(state, [], {})
    # Clearing is enough: no summary (no model call), the newest results kept whole.
    assert plan is not None and plan.through == 0 and plan.clear_before > 0
    made = ev.ContextCompacted(
        event_id=ids.derive("cleared"),
        session_id="s",
        occurred_at=T0,
        payload=ev.ContextCompactedPayload(
            model=None, through=plan.through, clear_before=plan.clear_before, summary=None
        ),
    )
    after = evolve(state, made)
    assert after.cleared_before == plan.clear_before and after.messages == state.messages
    assert evolve(after, made) is after  # a duplicate changes nothing
    sent = context.view(after)
    results = [b for m in sent for b in m["content"] if b.get("type") == "tool_result"]
    cleared = [b for b in results if b["content"] == context.PLACEHOLDER]
    # Whole messages of results are kept: the newest three results and those sent beside them.
    assert len(results) == 6 and len(cleared) == 2 and results[-1]["content"] == "x" * 4000
    assert pairs_valid(sent)
    assert context.request_tokens(after, [], 0) <= context.budget(after) * 3 // 4 < plan.tokens_before


def test_a_compaction_that_would_break_the_transcript_changes_nothing_but_the_bill() -> None:
    sim = long_session(2, window=None)
    state = fold("s", sim.log)
    assert state.messages[2].role == "user"
    odd = ev.ContextCompacted(
        event_id=ids.derive("odd"),
        session_id="s",
        occurred_at=T0,
        payload=ev.ContextCompactedPayload(
            model="m",
            through=2,
            clear_before=len(state.messages) + 5,
            summary="x",
            usage=ev.Usage(output_tokens=7),
        ),
    )
    after = evolve(state, odd)
    assert (after.compacted_through, after.cleared_before, after.summary) == (0, 0, None)
    assert after.usage.output_tokens == state.usage.output_tokens + 7


def test_a_session_within_its_window_never_compacts() -> None:
    sim = long_session(4, window=None)
    assert not any(isinstance(e, ev.CompactionRequested | ev.ContextCompacted) for e in sim.log)
    state: SessionState = fold("s", sim.log)
    assert context.view(state) == [m.as_api() for m in state.messages]


def test_a_failed_compaction_fails_its_turn_and_the_next_turn_compacts() -> None:
    sim = long_session(12)
    asked = next(e for e in sim.log if isinstance(e, ev.CompactionRequested))
    log = sim.log[: sim.log.index(asked) + 1]
    log.append(results.failed(asked, "compaction failed: 529 overloaded_error", T0))
    state = fold("s", log)
    assert state.turn(asked.turn_id).status == "failed" and state.current_turn is None  # type: ignore[union-attr]
    state = evolve(state, ev.user_message("s", text="and now?", idempotency_key="next", at=T0))
    state, reactions = reactor.settle(state, T0)
    assert [type(r) for r in reactions] == [ev.TurnStarted, ev.CompactionRequested]
    assert state.compacting(reactions[0].turn_id) and not state.compacting(asked.turn_id)


def test_a_summary_prompt_is_cut_from_the_front_to_fit_even_a_tiny_window() -> None:
    state = fold("s", long_session(12, window=None).log)
    whole = context.summary_prompt(state, len(state.messages) - 1)[0]["content"][0]["text"]
    assert "message 0" in whole and "message 11" in whole
    small = configured(state, {"context_window": 1100, "max_tokens": 200})
    cut = context.summary_prompt(small, len(state.messages) - 1)
    text = cut[0]["content"][0]["text"]
    assert "message 0" not in text and "message 11" in text and text.startswith("<conversation>\n…")
    assert tokens.estimate(cut) <= context.budget(small) - context.summary_tokens(small)
    tiny = configured(state, {"context_window": 10})
    assert context.summary_prompt(tiny, len(state.messages) - 1)  # it ends, however small


def test_a_summary_is_clipped_to_its_share_of_the_window_in_any_script() -> None:
    state = configured(fold("s", []), {"context_window": 4000, "max_tokens": 500})
    share = context.summary_tokens(state)
    for text in ("short", "word " * 5000, "摘要" * 5000):
        clipped = context.clip_summary(text, state)
        assert tokens.estimate(clipped) <= share
        assert clipped == text or (clipped.endswith("…") and text.startswith(clipped[:-1]))
