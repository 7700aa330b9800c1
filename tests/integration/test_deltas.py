"""The model worker's text deltas: sent beside the model's stream, never in its way, a few
notifications for a fast stream instead of one per piece, and every payload one that
Postgres' NOTIFY takes, whatever the text."""

from __future__ import annotations

import asyncio
import json

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import channels
from eventstore.channels import MAX_PAYLOAD, delta_payloads
from processors.model_worker import Deltas

HEAD = {"session_id": "s", "turn_id": "t", "step": 1}


async def test_pieces_that_arrive_while_one_is_sent_go_out_together_in_order() -> None:
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(payload: str) -> None:
        await gate.wait()
        sent.append(json.loads(payload)["text"])

    deltas = Deltas(send, HEAD)
    deltas.add("one ")
    await asyncio.sleep(0)  # the first notification is on its way (held at the gate)
    for piece in ("two ", "three ", "", "four"):
        deltas.add(piece)  # never waits, however slow the database
    assert sent == []
    gate.set()
    await asyncio.wait_for(deltas.drain(), 5)
    assert sent == ["one ", "two three four"]
    assert deltas.sent == 2


async def test_a_stuck_database_holds_nothing_up_and_cancel_drops_the_rest() -> None:
    async def send(payload: str) -> None:
        await asyncio.Event().wait()  # never answers

    deltas = Deltas(send, HEAD)
    for n in range(1000):
        deltas.add(f"{n} ")
    await asyncio.sleep(0)
    deltas.cancel()
    await asyncio.sleep(0)
    assert deltas.sent == 0


async def test_a_failed_notification_is_skipped_and_the_rest_still_goes() -> None:
    sent: list[str] = []

    async def send(payload: str) -> None:
        text = json.loads(payload)["text"]
        if text == "bad":
            raise psycopg.OperationalError("gone")
        sent.append(text)

    deltas = Deltas(send, HEAD)
    deltas.add("bad")
    await asyncio.sleep(0)
    deltas.add("good")
    await asyncio.wait_for(deltas.drain(), 5)
    assert sent == ["good"]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=20_000))
def test_every_payload_fits_a_notification_and_the_pieces_give_the_text_back(text: str) -> None:
    payloads = list(delta_payloads(HEAD, text))
    assert all(len(p.encode()) < MAX_PAYLOAD for p in payloads)
    pieces = [json.loads(p) for p in payloads]
    assert all({k: v for k, v in p.items() if k != "text"} == HEAD for p in pieces)
    assert "".join(p["text"] for p in pieces) == text


async def test_wide_text_goes_through_postgres_notify_whole(pg_server: str) -> None:
    # 4,000 CJK characters were one payload of 24 KB once (escaped as \\uXXXX): refused by
    # NOTIFY, and the live view lost them. Emoji and control characters are wider still.
    text = "流式输出的文本" * 1500 + "🙂\x00\x01" * 800 + "end"
    async with (
        await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as sender,
    ):
        await listener.execute(f"LISTEN {channels.DELTAS}")

        deltas = Deltas(lambda payload: channels.notify_delta(sender, payload), HEAD)
        for start in range(0, len(text), 700):
            deltas.add(text[start : start + 700])
        await asyncio.wait_for(deltas.drain(), 30)
        assert deltas.sent >= 1
        received: list[str] = []
        async for note in listener.notifies(timeout=10, stop_after=deltas.sent):
            received.append(json.loads(note.payload)["text"])
    assert "".join(received) == text
