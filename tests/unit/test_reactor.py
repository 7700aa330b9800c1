"""The pure reactor: the simplest turn, one turn at a time, nothing after deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from eventstore import events as ev
from eventstore import ids
from eventstore.state import fold
from processors import reactor
from processors.reactor_worker import ReactorWorker

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_user_message_starts_a_turn_and_asks_the_model() -> None:
    log: list[ev.Event] = [
        ev.session_started("s", model="m", at=AT),
        ev.user_message("s", text="hi", idempotency_key="a", at=AT),
    ]
    out = reactor.react(fold("s", log), AT)
    assert [e.type for e in out] == ["turn_started", "model_requested"]
    assert out[1].step == 1 and out[0].turn_id == out[1].turn_id == log[1].turn_id
    # Reactions are derived from causes: asked again, the reactor gives the same ids.
    assert [e.event_id for e in reactor.react(fold("s", log), AT)] == [e.event_id for e in out]
    # Once folded, the state asks for nothing more until the model answers.
    assert reactor.react(fold("s", [*log, *out]), AT) == []


def test_second_message_waits_for_the_running_turn() -> None:
    log: list[ev.Event] = [
        ev.session_started("s", model="m", at=AT),
        ev.user_message("s", text="one", idempotency_key="a", at=AT),
    ]
    log += reactor.react(fold("s", log), AT)
    second = ev.user_message("s", text="two", idempotency_key="b", at=AT)
    log.append(second)
    state = fold("s", log)
    assert reactor.react(state, AT) == []
    assert [t.status for t in state.turns] == ["running", "queued"]
    reply = ev.AssistantMessage(
        event_id=ids.derive("reply"),
        session_id="s",
        turn_id=log[1].turn_id,
        step=1,
        occurred_at=AT,
        payload=ev.AssistantMessagePayload(
            model="m", content=[{"type": "text", "text": "ok"}], stop_reason="end_turn"
        ),
    )
    log.append(reply)
    done = reactor.react(fold("s", log), AT)
    assert [e.type for e in done] == ["turn_completed"]
    log += done
    nxt = reactor.react(fold("s", log), AT)
    assert [e.type for e in nxt] == ["turn_started", "model_requested"]
    assert nxt[0].turn_id == second.turn_id


def test_deleted_session_starts_nothing_and_fails_a_late_message() -> None:
    log: list[ev.Event] = [
        ev.session_started("s", model="m", at=AT),
        ev.SessionDeleted(event_id=ids.derive("del"), session_id="s", occurred_at=AT),
        ev.user_message("s", text="late", idempotency_key="z", at=AT),
    ]
    out = reactor.react(fold("s", log), AT)
    assert [e.type for e in out] == ["turn_failed"]
    assert isinstance(out[0], ev.TurnFailed) and out[0].payload.reason == "session deleted"
    assert reactor.react(fold("s", [*log, *out]), AT) == []


async def test_a_reactor_that_cannot_confirm_its_reactions_acts_on_them_again() -> None:
    """`rewind`: the reactions of a batch are sent without waiting for each acknowledgement;
    if they cannot be confirmed, each partition's position goes back to the first record
    whose reactions were in flight (a restart acts on it again) and what was not sent is
    cancelled."""
    worker = ReactorWorker.__new__(ReactorWorker)
    worker.position = {0: 13, 1: 8, 2: 5}
    loop = asyncio.get_running_loop()
    sent = [loop.create_future() for _ in range(4)]
    sent[0].set_result(None)
    worker.in_flight = [(0, 10, [sent[0]]), (1, 6, [sent[1]]), (0, 11, [sent[2]]), (1, 7, [sent[3]])]
    worker.rewind()
    assert worker.position == {0: 10, 1: 6, 2: 5}
    assert worker.in_flight == []
    assert [f.cancelled() for f in sent] == [False, True, True, True]
