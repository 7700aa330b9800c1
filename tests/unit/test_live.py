"""The listener's fan-out without a database: bounded deltas, coalesced announcements, the
"anything changed" signal, and announcement payloads that always fit Postgres' limit."""

from __future__ import annotations

import asyncio
import json

from hypothesis import example, given
from hypothesis import strategies as st

from api.live import DELTA_BUFFER, Live
from eventstore import channels

BIGGEST_SEQ = 2**63 - 1


def _delta(session_id: str, n: int) -> str:
    return json.dumps({"session_id": session_id, "turn_id": "t", "step": 1, "text": f"{n} "})


async def test_a_slow_subscriber_drops_its_own_deltas_only() -> None:
    live = Live("postgresql://unused", deltas=True)
    with live.subscribe("s", deltas=True) as slow, live.subscribe("s", deltas=True) as quick:
        taken = []
        for n in range(3 * DELTA_BUFFER):
            live._dispatch(channels.DELTAS, _delta("s", n))
            live._dispatch(channels.DELTAS, _delta("other", n))
            taken += [d["text"] for d in quick.take_deltas()]
        assert taken == [f"{n} " for n in range(3 * DELTA_BUFFER)]
        kept = slow.take_deltas()
        # The oldest are kept (a prefix of the text), the rest dropped and counted.
        assert [d["text"] for d in kept] == [f"{n} " for n in range(DELTA_BUFFER)]
        assert slow.dropped == 2 * DELTA_BUFFER and quick.dropped == 0
    assert live.subscribers() == 0


async def test_announcements_coalesce_into_the_highest_seq_and_one_wake() -> None:
    live = Live("postgresql://unused")
    with live.subscribe("s") as sub, live.subscribe("t") as other:
        assert sub.due(0) and other.due(0)  # nothing read yet
        assert not sub.due(0)
        for seq in (3, 5, 4):
            live._dispatch(channels.PROJECTED, json.dumps({"s": seq, "u": 9}))
        live._dispatch(channels.DELTAS, _delta("s", 1))  # not asked for: no wake, no buffer
        await sub.wait(0)
        assert sub.announced == 5 and sub.take_deltas() == []
        assert sub.due(4) and not sub.due(5)
        assert not other.due(0)  # another session's announcements leave it be
        live._dispatch(channels.PROJECTED, channels.EVERYTHING)
        assert other.due(0) and sub.due(5)
        live._dispatch(channels.PROJECTED, "not json")
        assert other.due(0)


async def test_a_wait_returns_at_once_after_a_signal_and_after_its_time_without_one() -> None:
    live = Live("postgresql://unused")
    with live.subscribe("s") as sub:
        live._dispatch(channels.PROJECTED, json.dumps({"s": 1}))
        await sub.wait(3600)  # woken before it began: returns at once
        await sub.wait(0.01)  # nothing since: its time runs out


# What Postgres text holds: no NUL, no lone surrogate.
characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
session_ids = st.lists(st.text(characters, min_size=1, max_size=300), max_size=200, unique=True)


@given(session_ids)
@example([f"{i:03d}" + "x" * 297 for i in range(200)])
@example([f"{i:03d}" + '"\n\x01é😀' * 59 for i in range(200)])
def test_announcements_name_every_session_once_within_the_payload_limit(ids: list[str]) -> None:
    groups, too_long = channels.chunks(ids)
    assert not too_long
    assert sorted(sid for group in groups for sid in group) == sorted(ids)
    for group in groups:
        # As Postgres writes json_object_agg: raw UTF-8, `{ "k" : v, ... }`.
        payload = (
            "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} : {BIGGEST_SEQ}" for k in group) + " }"
        )
        assert len(payload.encode()) < 8000
        assert channels.parse_projected(payload) == dict.fromkeys(group, BIGGEST_SEQ)


def test_an_id_too_long_for_any_payload_is_announced_as_everything() -> None:
    groups, too_long = channels.chunks(["a", "b" * 8000])
    assert groups == [["a"]] and too_long
    assert channels.parse_projected(channels.EVERYTHING) is None


async def test_a_turn_wait_wakes_for_its_turn_ending_only() -> None:
    live = Live("postgresql://unused")
    with live.subscribe("s", turn_id="t1") as waiting, live.subscribe("s") as stream:
        assert waiting.due(0) and stream.due(0)
        live._dispatch(channels.PROJECTED, json.dumps({"s": 4}))
        await stream.wait(0)
        assert stream.due(0) and not waiting._woken.is_set()  # rows of the session: not its end
        live._dispatch(channels.TURNS, json.dumps({"t2": "s", "t1": "other"}))
        assert not waiting._woken.is_set()  # another turn, and the same id of another session
        live._dispatch(channels.TURNS, json.dumps({"t1": "s"}))
        assert waiting._woken.is_set() and waiting.due(99)
        await waiting.wait(0)
        live._dispatch(channels.TURNS, "not json")  # unreadable: everything may have changed
        assert waiting._woken.is_set()


def test_finished_turns_are_announced_in_payloads_under_the_limit() -> None:
    sent: list[str] = []

    class Conn:
        async def execute(self, query: str, params: tuple[str, str]) -> None:
            assert params[0] == channels.TURNS
            sent.append(params[1])

    finished = {f"turn-{i:04d}-" + "t" * 80: f"session-{i}-" + "s" * 200 for i in range(200)}
    asyncio.run(channels.notify_turns(Conn(), finished))  # type: ignore[arg-type]
    assert len(sent) > 1 and all(len(p.encode()) < 8000 for p in sent)
    merged: dict[str, str] = {}
    for payload in sent:
        parsed = channels.parse_turns(payload)
        assert parsed is not None
        merged |= parsed
    assert merged == finished
