"""The full reactor, pure: tool steps, every stop reason, policies, limits, expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore import events as ev
from eventstore import ids
from eventstore.events import Usage
from eventstore.state import SessionState, fold
from processors import reactor
from processors.model import results
from processors.model.port import ModelResponse
from tests.unit.test_fold import assert_transcript_valid

AT = datetime(2026, 1, 1, tzinfo=UTC)


class Session:
    """A log driven by hand: settle the reactor, answer the model, answer tools."""

    def __init__(self, **settings: Any) -> None:
        self.log: list[ev.Event] = [ev.session_started("s", model="m", at=AT, **settings)]
        self.n = 0

    @property
    def state(self) -> SessionState:
        return fold("s", self.log)

    def settle(self) -> list[ev.Event]:
        _, out = reactor.settle(self.state, AT)
        self.log += out
        return out

    def user(self, text: str = "hi") -> ev.UserMessage:
        self.n += 1
        message = ev.user_message("s", text=text, idempotency_key=f"k{self.n}", at=AT)
        self.log.append(message)
        return message

    def last_request(self) -> ev.ModelRequested:
        return next(e for e in reversed(self.log) if isinstance(e, ev.ModelRequested))

    def model(self, *content: dict[str, Any], stop: Any = "end_turn", usage: Usage | None = None) -> None:
        response = ModelResponse(model="m", content=list(content), stop_reason=stop, usage=usage or Usage())
        self.log.append(results.answered(self.last_request(), response, AT))

    def tool(self, request: ev.ToolRequested, text: str, is_error: bool = False) -> ev.ToolResult:
        result = ev.tool_result(
            "s",
            turn_id=request.turn_id,
            step=request.step,
            tool_use_id=request.payload.tool_use_id,
            content=text,
            is_error=is_error,
        )
        self.log.append(result)
        return result


def use(n: int) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{n}", "name": "Echo", "input": {"text": str(n)}}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def test_parallel_tool_uses_become_requests_and_their_results_go_back_in_one_message() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(text("using tools"), use(1), use(2), use(3), stop="tool_use")
    requests = s.settle()
    assert [e.type for e in requests] == ["tool_requested"] * 3
    assert [r.payload.tool_use_id for r in requests if isinstance(r, ev.ToolRequested)] == [
        "toolu_1",
        "toolu_2",
        "toolu_3",
    ]
    assert s.settle() == []  # asked once
    # Results arrive in any order; the reactor waits for all of them.
    tool_requests = [r for r in requests if isinstance(r, ev.ToolRequested)]
    s.tool(tool_requests[2], "three")
    s.tool(tool_requests[0], "one")
    assert s.settle() == []
    s.tool(tool_requests[1], "two")
    (following,) = s.settle()
    assert isinstance(following, ev.ModelRequested) and following.step == 2
    # One user message, results in the order of the tool_use blocks.
    assert [b["tool_use_id"] for b in following.payload.tool_results] == ["toolu_1", "toolu_2", "toolu_3"]
    assert [b["content"] for b in following.payload.tool_results] == ["one", "two", "three"]
    assert [m.role for m in s.state.messages] == ["user", "assistant", "user"]
    s.model(text("done"))
    (completed,) = s.settle()
    assert isinstance(completed, ev.TurnCompleted) and completed.payload.stop_reason == "end_turn"
    assert_transcript_valid(s.state.messages)


def test_a_duplicate_or_stray_tool_result_changes_nothing() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(use(1), use(2), stop="tool_use")
    first, second = [r for r in s.settle() if isinstance(r, ev.ToolRequested)]
    s.tool(first, "one")
    before = s.state
    # The same result again (same id), and a different answer to the same call: both ignored.
    s.log.append(s.log[-1])
    s.tool(first, "one, again")
    assert s.state.turn(before.current_turn) == before.turn(before.current_turn)
    s.tool(second, "two")
    (following,) = s.settle()
    assert isinstance(following, ev.ModelRequested)
    assert [b["content"] for b in following.payload.tool_results] == ["one", "two"]


@pytest.mark.parametrize(
    "stop", ["end_turn", "max_tokens", "stop_sequence", "refusal", "model_context_window_exceeded", None]
)
def test_terminal_stop_reasons_end_the_turn_with_that_reason(stop: Any) -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(text("partial"), stop=stop)
    (completed,) = s.settle()
    assert isinstance(completed, ev.TurnCompleted) and completed.payload.stop_reason == stop
    assert s.state.turns[0].status == "completed" and s.state.turns[0].stop_reason == stop


def test_max_tokens_inside_a_tool_use_closes_it_with_an_error_result() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(text("let me"), use(1), stop="max_tokens")
    (completed,) = s.settle()
    assert isinstance(completed, ev.TurnCompleted)
    (closing,) = completed.payload.tool_results
    assert closing["tool_use_id"] == "toolu_1" and closing["is_error"] is True
    assert "max_tokens" in closing["content"]
    assert_transcript_valid(s.state.messages)
    # The next turn's conversation is valid for the API.
    s.user("again")
    s.settle()
    assert [m.role for m in s.state.messages] == ["user", "assistant", "user", "user"]


def test_pause_turn_sends_the_conversation_again() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}, stop="pause_turn"
    )
    (again,) = s.settle()
    assert isinstance(again, ev.ModelRequested) and again.step == 2 and again.payload.tool_results == []
    assert s.state.messages[-1].role == "assistant"  # the paused content goes back as it was
    s.model(text("finished"))
    assert [e.type for e in s.settle()] == ["turn_completed"]


def test_tool_use_stop_without_a_tool_use_block_fails_clearly() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(text("hmm"), stop="tool_use")
    (failed,) = s.settle()
    assert isinstance(failed, ev.TurnFailed) and "no tool_use block" in failed.payload.reason


def test_step_limit_fails_the_turn_and_closes_its_tool_calls() -> None:
    s = Session(max_steps=2)
    s.user()
    s.settle()
    for step in (1, 2):
        s.model(use(step), stop="tool_use")
        (request,) = s.settle()
        assert isinstance(request, ev.ToolRequested)
        s.tool(request, f"r{step}")
        out = s.settle()
    (failed,) = out
    assert isinstance(failed, ev.TurnFailed)
    assert failed.payload.reason == "step limit reached: 2 model calls in this turn"
    assert [b["content"] for b in failed.payload.tool_results] == ["r2"]
    assert_transcript_valid(s.state.messages)


def test_token_budget_fails_the_turn_and_later_turns() -> None:
    s = Session(token_budget=100)
    s.user()
    s.settle()
    s.model(use(1), stop="tool_use", usage=Usage(input_tokens=80, output_tokens=30))
    (request,) = s.settle()
    assert isinstance(request, ev.ToolRequested)
    s.tool(request, "r")
    (failed,) = s.settle()
    assert isinstance(failed, ev.TurnFailed)
    assert failed.payload.reason == "token budget exhausted: 110 of 100 tokens used"
    s.user("more")
    out = s.settle()
    assert [e.type for e in out] == ["turn_started", "turn_failed"]


def test_policy_reject_fails_a_message_that_arrives_while_a_turn_runs() -> None:
    s = Session(policy="reject")
    s.user()
    s.settle()
    late = s.user("me too")
    (rejected,) = s.settle()
    assert isinstance(rejected, ev.TurnFailed) and rejected.turn_id == late.turn_id
    assert "policy reject" in rejected.payload.reason
    s.model(text("first answered"))
    assert [e.type for e in s.settle()] == ["turn_completed"]
    assert [t.status for t in s.state.turns] == ["completed", "failed"]


def test_policy_interrupt_ends_the_running_turn_and_answers_its_tool_calls() -> None:
    s = Session(policy="interrupt")
    s.user()
    s.settle()
    s.model(use(1), use(2), stop="tool_use")
    first, second = [r for r in s.settle() if isinstance(r, ev.ToolRequested)]
    s.tool(first, "one")
    newer = s.user("stop, do this instead")
    out = s.settle()
    assert [e.type for e in out] == ["tool_result", "turn_failed", "turn_started", "model_requested"]
    cancelled = out[0]
    assert isinstance(cancelled, ev.ToolResult) and cancelled.payload.is_error
    assert cancelled.payload.tool_use_id == "toolu_2"
    assert out[2].turn_id == newer.turn_id
    # The executor's late result is the same event id: a duplicate that changes nothing.
    late = s.tool(second, "two, too late")
    assert late.event_id == cancelled.event_id
    assert fold("s", s.log) == fold("s", s.log[:-1])
    assert_transcript_valid(s.state.messages)
    s.model(text("ok"))
    s.settle()
    assert [t.status for t in s.state.turns] == ["failed", "completed"]


def test_policy_interrupt_while_the_model_runs_ignores_its_late_answer() -> None:
    s = Session(policy="interrupt")
    s.user()
    s.settle()
    old_request = s.last_request()
    s.user("newer")
    assert [e.type for e in s.settle()] == ["turn_failed", "turn_started", "model_requested"]
    late = results.answered(old_request, ModelResponse("m", [text("late")], "end_turn", Usage()), AT)
    s.log.append(late)
    assert all(m.content != (text("late"),) for m in s.state.messages)


def test_an_idle_session_expires_after_its_ttl_only() -> None:
    s = Session(ttl_s=60)
    s.user()
    s.settle()
    assert reactor.expiry(s.state, AT + timedelta(hours=1)) is None  # running: never
    s.model(text("answer"))
    s.settle()
    assert reactor.expiry(s.state, AT + timedelta(seconds=59)) is None
    expired = reactor.expiry(s.state, AT + timedelta(seconds=61))
    assert isinstance(expired, ev.SessionExpired) and expired.payload.idle_s == 61
    assert expired.payload.ttl_s == 60 and expired.schema_version == 2
    s.log.append(expired)
    assert s.state.status == "expired"
    s.user("anyone?")
    (failed,) = s.settle()
    assert isinstance(failed, ev.TurnFailed) and failed.payload.reason == "session expired"
    assert reactor.expiry(Session().state, AT + timedelta(days=999)) is None  # no TTL: kept


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "tool_use", "name": "Echo", "input": {}}],
        [use(1), use(1)],
    ],
    ids=["no id", "repeated id"],
)
def test_tool_use_blocks_without_unique_ids_fail_the_turn_instead_of_hanging(blocks: list[Any]) -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(*blocks, stop="tool_use")
    out = s.settle()
    assert [e.type for e in out] == ["turn_failed"]
    assert isinstance(out[0], ev.TurnFailed) and "unique string ids" in out[0].payload.reason


def test_a_deleted_session_fails_every_queued_turn_at_once() -> None:
    s = Session()
    for i in range(100):
        s.user(f"m{i}")
    s.settle()
    s.log.append(ev.SessionDeleted(event_id=ids.derive("del"), session_id="s", occurred_at=AT))
    out = s.settle()
    assert sum(1 for e in out if e.type == "turn_failed") == 100
    assert all(t.status == "failed" for t in s.state.turns)


def test_an_expiry_that_raced_a_new_message_is_void() -> None:
    s = Session(ttl_s=60)
    s.user()
    s.settle()
    s.model(text("answer"))
    s.settle()
    expired = reactor.expiry(s.state, AT + timedelta(seconds=61))
    assert expired is not None
    message = s.user("just in time")  # in the log before the expiry
    s.log.append(expired)
    assert s.state.status == "running"
    assert [e.type for e in s.settle()] == ["turn_started", "model_requested"]
    assert s.state.turn(message.turn_id) is not None
    # Idle again later: a new expiry (another id) can close it.
    s.model(text("ok"))
    s.settle()
    again = reactor.expiry(s.state, AT + timedelta(seconds=200))
    assert again is not None and again.event_id != expired.event_id


@pytest.mark.parametrize("policy", ["enqueue", "interrupt", "reject"])
def test_a_message_from_another_tenant_is_refused_without_a_model_call(policy: Any) -> None:
    """Invariant 6 in the workers: a user_message whose tenant does not own the session (one
    appended straight to the log, past the api) never reaches the model or the transcript."""
    s = Session(policy=policy)
    s.user("mine")
    s.settle()
    running = s.state.current_turn
    forged = []
    for n in range(2):  # once while a turn runs, once while the session is idle
        forged.append(
            ev.user_message(
                "s", text=f"forged {n}", idempotency_key=f"forged{n}", tenant_id="intruder", at=AT
            )
        )
        s.log.append(forged[-1])
        (refused,) = s.settle()
        assert isinstance(refused, ev.TurnFailed) and refused.turn_id == forged[-1].turn_id
        assert refused.payload.reason == "refused: the message's tenant does not own this session"
        assert refused.tenant_id == "default" and s.state.tenant_id == "default"
        # The running turn goes on, neither interrupted nor queued behind the forged one.
        assert s.state.current_turn == running
        assert not any(t.interrupted for t in s.state.turns)
        if n == 0:
            s.model(text("answered"))
            assert [e.type for e in s.settle()] == ["turn_completed"]
            running = None
    state = s.state
    assert [t.status for t in state.turns] == ["completed", "failed", "failed"]
    assert state.turn_count == 1 and state.status == "idle"
    assert [m.content[0]["text"] for m in state.messages] == ["mine", "answered"]
    asked = [e.turn_id for e in s.log if isinstance(e, ev.ModelRequested | ev.TurnStarted)]
    assert not {f.turn_id for f in forged} & set(asked)


def test_requested_tools_cut_short_are_reported_as_unknown_and_unrequested_as_not_run() -> None:
    s = Session(policy="interrupt")
    s.user()
    s.settle()
    s.model(use(1), use(2), stop="tool_use")
    s.settle()
    s.log = [e for e in s.log if not (isinstance(e, ev.ToolRequested) and e.payload.tool_use_id == "toolu_2")]
    s.user("newer")
    failed = next(e for e in s.settle() if isinstance(e, ev.TurnFailed))
    first, second = failed.payload.tool_results
    assert first["content"].startswith("outcome unknown: interrupted")
    assert second["content"].startswith("not run: interrupted")


def test_tools_that_never_answer_are_given_up_on_after_the_deadline() -> None:
    s = Session()
    s.user()
    s.settle()
    s.model(use(1), use(2), stop="tool_use")
    first, _ = [r for r in s.settle() if isinstance(r, ev.ToolRequested)]
    s.tool(first, "one")
    assert reactor.overdue(s.state, AT + timedelta(seconds=59), 60) == []
    (late,) = reactor.overdue(s.state, AT + timedelta(seconds=61), 60)
    assert isinstance(late, ev.ToolResult) and late.payload.tool_use_id == "toolu_2" and late.payload.is_error
    assert "no tool executor answered within 60 s" in str(late.payload.content)
    s.log.append(late)
    (following,) = s.settle()
    assert isinstance(following, ev.ModelRequested)
    assert reactor.overdue(s.state, AT + timedelta(days=1), 60) == []


def test_a_model_call_nobody_answers_fails_its_turn_at_the_deadline_and_the_next_one_runs() -> None:
    s = Session()
    s.user()
    s.settle()
    assert s.state.turns[0].model_pending
    assert reactor.model_overdue(s.state, AT + timedelta(seconds=59), 60) == []
    (failed,) = reactor.model_overdue(s.state, AT + timedelta(seconds=61), 60)
    assert isinstance(failed, ev.TurnFailed)
    assert failed.payload.reason == "no model worker answered step 1 within 60 s"
    # The id a model worker's own failure of this turn would have: the two are one event.
    assert failed.event_id == results.failed(s.last_request(), "other", AT).event_id
    s.log.append(failed)
    assert s.state.turns[0].status == "failed" and not s.state.turns[0].model_pending
    s.model(text("late"))  # the lost worker's answer, after all: ignored
    assert s.state.turns[0].status == "failed"
    s.user("again")
    s.settle()
    assert s.state.turns[1].status == "running"
    assert reactor.model_overdue(s.state, AT + timedelta(seconds=59), 60) == []
    assert_transcript_valid(s.state.messages)


def test_a_model_call_nobody_took_is_asked_for_once_more_then_left_to_its_deadline() -> None:
    s = Session()
    s.user()
    s.settle()
    first = s.last_request()
    assert reactor.model_unclaimed(s.state, AT + timedelta(seconds=19), 20) == []
    (again,) = reactor.model_unclaimed(s.state, AT + timedelta(seconds=21), 20)
    # The same call (its ledger key is session/turn/step), a new event: workers see it as new.
    assert isinstance(again, ev.ModelRequested) and again.event_id != first.event_id
    assert (again.turn_id, again.step) == (first.turn_id, first.step)
    s.log.append(again)
    assert s.state.turns[0].model_pending and s.state.turns[0].step == 1
    assert reactor.model_unclaimed(s.state, AT + timedelta(seconds=99), 20) == []  # once only
    s.model(text("done"))
    s.settle()
    assert s.state.turns[0].status == "completed"
    assert_transcript_valid(s.state.messages)


def task_use(n: int, prompt: str = "do it") -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_t{n}",
        "name": "Task",
        "input": {"description": "d", "prompt": prompt},
    }


def complete(s: Session, request: ev.SubagentRequested, text: str) -> None:
    p = request.payload
    s.log.append(
        ev.SubagentCompleted(
            event_id=ids.derive(f"done/{p.tool_use_id}/{p.attempt}"),
            session_id="s",
            turn_id=request.turn_id,
            step=request.step,
            occurred_at=AT,
            payload=ev.SubagentCompletedPayload(
                tool_use_id=p.tool_use_id, child_session_id=p.child_session_id, result=text, attempt=p.attempt
            ),
        )
    )


def test_task_calls_start_sub_agents_and_their_answers_are_the_results() -> None:
    s = Session(subagent_timeout_s=60)
    s.user()
    s.settle()
    s.model(task_use(1), task_use(2), stop="tool_use")
    first, second = s.settle()
    assert isinstance(first, ev.SubagentRequested) and isinstance(second, ev.SubagentRequested)
    assert first.payload.child_session_id != second.payload.child_session_id and first.payload.depth == 1
    assert s.settle() == []
    complete(s, second, "two")
    complete(s, first, "one")
    (following,) = s.settle()
    assert isinstance(following, ev.ModelRequested)
    assert [b["content"] for b in following.payload.tool_results] == ["one", "two"]
    assert s.state.subagents_started == 2


def test_a_timed_out_attempt_is_replaced_then_given_up_and_late_answers_ignored() -> None:
    s = Session(subagent_timeout_s=10, subagent_attempts=2)
    s.user()
    s.settle()
    s.model(task_use(1), stop="tool_use")
    (first,) = s.settle()
    assert isinstance(first, ev.SubagentRequested)
    assert reactor.subagent_timeouts(s.state, AT + timedelta(seconds=9)) == []
    (second,) = reactor.subagent_timeouts(s.state, AT + timedelta(seconds=11))
    assert isinstance(second, ev.SubagentRequested) and second.payload.attempt == 2
    s.log.append(second)
    complete(s, first, "too late")  # the abandoned attempt's answer
    assert s.settle() == []
    (gave_up,) = reactor.subagent_timeouts(s.state, AT + timedelta(seconds=30))
    assert isinstance(gave_up, ev.ToolResult) and gave_up.payload.is_error
    assert "2 attempt(s) of 10 s each timed out" in str(gave_up.payload.content)
    s.log.append(gave_up)
    assert [e.type for e in s.settle()] == ["model_requested"]


@pytest.mark.parametrize(
    ("settings", "blocks", "message"),
    [
        ({"depth": 2, "max_depth": 2}, [task_use(1)], "depth limit"),
        ({"max_subagents": 1}, [task_use(1), task_use(2)], "sub-agent budget spent"),
        ({}, [task_use(1, prompt="")], "non-empty `prompt`"),
    ],
)
def test_task_limits_answer_with_an_error_the_model_can_read(
    settings: dict[str, Any], blocks: list[Any], message: str
) -> None:
    s = Session(**settings)
    s.user()
    s.settle()
    s.model(*blocks, stop="tool_use")
    out = s.settle()
    errors = [e for e in out if isinstance(e, ev.ToolResult)]
    assert errors and message in str(errors[-1].payload.content)


def test_a_child_inherits_the_parents_tools_and_rules() -> None:
    s = Session(tools=["Task", "Read"], approvals=["Read"], token_budget=5000, max_subagents=3)
    s.user()
    s.settle()
    wide = {**task_use(1), "input": {"description": "d", "prompt": "p", "tools": ["Read", "Bash"]}}
    s.model(wide, stop="tool_use")
    (request,) = s.settle()
    assert isinstance(request, ev.SubagentRequested)
    assert request.payload.tools == ["Read"]  # never more than the parent may use
    limits = request.payload.limits
    assert limits["approvals"] == ["Read"] and limits["token_budget"] == 5000 and limits["max_subagents"] == 3


def test_task_outside_the_session_tools_is_refused() -> None:
    s = Session(tools=["Read"])
    s.user()
    s.settle()
    s.model(task_use(1), stop="tool_use")
    refused, following = s.settle()
    assert isinstance(refused, ev.ToolResult) and isinstance(following, ev.ModelRequested)
    assert "not among this session's tools" in str(refused.payload.content)


def test_another_tenant_cannot_take_a_session_over_by_starting_it_again() -> None:
    first = ev.session_started("owned", model="m", tenant_id="tenant-a", system="mine")
    forged = ev.session_started("owned", model="x", tenant_id="tenant-b", system="pwned")
    state = fold("owned", [first, forged.model_copy(update={"event_id": uuid.uuid4()})])
    assert state.tenant_id == "tenant-a" and state.config.system == "mine" and state.config.model == "m"
