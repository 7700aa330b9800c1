"""Issue 17's stuck turn: a request whose offset a worker passed without serving it.

A worker's offset may pass a request only once its outcome is recorded or the session no
longer waits for it, and "no longer waits" is decided on the worker's cached state. A state
loaded from Postgres while the worker folded a newer event of the same session replaced the
folded one: the worker then judged a later request of that session against a state that
lacked its turn, released it unserved, and saved its offset past it. These tests hold the
order that prevents it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstore import codec, store
from eventstore import events as ev
from eventstore.models import OFFLINE_MODEL
from processors.sessions import SessionCache
from tests.services import create_database, stack_on, wait_until

EPOCH = "e1"


@pytest.fixture
async def conn(pg_server: str) -> AsyncIterator[store.AsyncConn]:
    url = create_database(pg_server)
    await store.migrate(url)
    async with await store.connect(url) as c:
        yield c


async def _project(conn: store.AsyncConn, events: list[ev.Event]) -> None:
    records = []
    for offset, event in enumerate(events):
        key, value, headers = codec.encode(event)
        records.append(store.Incoming(offset, key, value, headers, event))
    await store.apply_batch(conn, "projector", EPOCH, codec.EVENTS_TOPIC, 0, records)


async def test_a_load_never_replaces_a_state_folded_while_it_waited(
    conn: store.AsyncConn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An effect task loads a session (its state was dropped from the bounded cache) while the
    worker folds the session's next record: the folded state stays, the load gives way."""
    started = ev.session_started("s", model=OFFLINE_MODEL)
    await _project(conn, [started])
    message = ev.user_message("s", text="hi", idempotency_key="t1")
    cache = SessionCache(conn, EPOCH, position=lambda partition: 1)

    real = store.session_events
    gate, waiting = asyncio.Event(), asyncio.Event()
    calls = 0

    async def held_first(*args: Any, **kwargs: Any) -> list[ev.Event]:
        nonlocal calls
        calls += 1
        if calls == 1:
            waiting.set()
            await gate.wait()  # the task's load is slower than the worker's
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "session_events", held_first)
    loading = asyncio.create_task(cache.get("s"))
    await waiting.wait()
    folded, new = await cache.apply(message, 1)
    assert new and folded.turn(message.turn_id) is not None
    gate.set()
    await loading
    kept = cache.peek("s")
    assert kept is not None and kept.turn(message.turn_id) is not None, "the load replaced the folded state"
    assert cache.peek("s") is folded


# Every model request has its call recorded in the ledger or its answer in the log.
UNSERVED = (
    "SELECT r.session_id, r.turn_id, r.step FROM events r WHERE r.type = 'model_requested'"
    " AND NOT EXISTS (SELECT 1 FROM effects f WHERE f.effect_key ="
    "   'model/' || r.session_id || '/' || r.turn_id || '/' || r.step)"
    " AND NOT EXISTS (SELECT 1 FROM events a WHERE a.session_id = r.session_id"
    "   AND a.turn_id = r.turn_id AND a.step = r.step AND a.type IN ('assistant_message', 'turn_failed'))"
)


async def test_no_request_is_passed_unserved_when_states_come_and_go(pg_server: str, log_dir: Path) -> None:
    """Many sessions through a model worker whose cache holds one state: every state is loaded
    again from Postgres while its session goes on, and every request is still served."""
    async with stack_on(pg_server, log_dir, partitions=1, session_cache_sessions=1) as stack:
        await stack.start("projector", "reactor", "model")
        url = await stack.start_api()
        sessions, turns = 8, 3
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def post(sid: str, n: int) -> None:
                # The first round waits for its answers (the states go once all is projected),
                # the others are queued behind each other.
                wait = {"wait": 20} if n == 0 else None
                r = await client.post(
                    f"/v1/sessions/{sid}/messages", params=wait, json={"content": f"turn {n}"}
                )
                assert r.status_code in (200, 202), r.text

            await asyncio.gather(*(post(f"c{s}", 0) for s in range(sessions)))
            await asyncio.sleep(1.5)  # the projector's position is read again, the states trimmed
            for n in range(1, turns):
                await asyncio.gather(*(post(f"c{s}", n) for s in range(sessions)))

        async def finished() -> bool:
            rows = await stack.sql("SELECT count(*) FROM turns WHERE status IN ('completed', 'failed')")
            return bool(rows[0][0] == sessions * turns)

        try:
            await wait_until(finished, within=30)
        except AssertionError:
            assert await stack.sql(UNSERVED) == [], "requests passed without being served"
            raise
        assert await stack.sql(UNSERVED) == []
        assert await stack.sql("SELECT DISTINCT status FROM turns") == [("completed",)]
        assert stack.workers["model"].cache.loads > sessions  # states did come and go
