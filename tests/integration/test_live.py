"""The api's one listener (`api.live`): many streams share one Postgres connection, a killed
listener reconnects without streams losing or repeating events, `?wait` wakes on the
projection's announcement, and the projector's announcements fit Postgres' payload limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentlog.client import SSEParser
from api.app import POOL_SIZE
from api.live import APPLICATION_NAME
from eventstore import channels, store
from eventstore.models import OFFLINE_MODEL
from tests.services import Stack, create_database, stack_on, wait_until

MODEL = OFFLINE_MODEL
FINISHED = ("turn_completed", "turn_failed")


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, offline_model_latency_ms=300) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


@dataclass
class Watched:
    """What one SSE stream delivered: stored events' ids and types, and the deltas' turns."""

    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ids: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    delta_turns: set[str] = field(default_factory=set)

    def finished(self) -> int:
        return sum(t in FINISHED for t in self.types)


async def watch(http: httpx.AsyncClient, session_id: str, seen: Watched, turns: int) -> None:
    """Read the session's stream until `turns` turns have finished on it."""
    parser = SSEParser()
    timeout = httpx.Timeout(30.0, read=None)
    async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream", timeout=timeout) as r:
        assert r.status_code == 200
        seen.connected.set()
        async for line in r.aiter_lines():
            message = parser.feed(line)
            if message is None:
                continue
            if message.event == "text_delta":
                seen.delta_turns.add(json.loads(message.data)["turn_id"])
                continue
            assert message.id is not None
            seen.ids.append(int(message.id))
            seen.types.append(message.event)
            if seen.finished() >= turns:
                return


async def connections(stack: Stack) -> tuple[int, int]:
    """Backends connected to the stack's database: the api's (its pool and listener), and all."""
    rows = await stack.sql(
        "SELECT count(*) FILTER (WHERE application_name LIKE 'agentlog-api%'), count(*)"
        " FROM pg_stat_activity WHERE datname = current_database()"
    )
    return int(rows[0][0]), int(rows[0][1])


async def listener_pid(stack: Stack) -> int | None:
    rows = await stack.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        APPLICATION_NAME,
    )
    assert len(rows) <= 1, rows
    return int(rows[0][0]) if rows else None


async def test_150_streams_share_one_listener_and_all_see_every_event(stack: Stack) -> None:
    sessions = [f"many-{i}" for i in range(10)]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60, limits=limits) as http:
        for sid in sessions:
            made = await http.post("/v1/sessions", json={"session_id": sid, "model": MODEL})
            assert made.status_code == 201
        watched = [(sessions[i % len(sessions)], Watched()) for i in range(150)]
        readers = [asyncio.create_task(watch(http, sid, seen, 1)) for sid, seen in watched]
        try:
            await asyncio.wait_for(asyncio.gather(*(seen.connected.wait() for _, seen in watched)), 60)
            peak = await connections(stack)
            posts = [http.post(f"/v1/sessions/{s}/messages", json={"content": f"hi {s}"}) for s in sessions]
            assert all(r.status_code == 202 for r in await asyncio.gather(*posts))
            while not all(task.done() for task in readers):
                now = await connections(stack)
                peak = (max(peak[0], now[0]), max(peak[1], now[1]))
                await asyncio.wait(readers, timeout=0.2)
            await asyncio.gather(*readers)
        finally:
            for task in readers:
                task.cancel()
    # 150 streams; the api holds its pool, one listener and one health check (api.health), the
    # database stays far from its limit.
    assert peak[0] <= POOL_SIZE + 2 and peak[1] < 50, peak
    for sid, seen in watched:
        assert seen.ids == list(range(1, len(seen.ids) + 1)), (sid, seen.ids)
        assert seen.types[0] == "session_started" and seen.types[-1] == "turn_completed", seen.types
    by_session = {sid: seen.ids for sid, seen in watched}
    assert all(seen.ids == by_session[sid] for sid, seen in watched)


async def test_a_killed_listener_reconnects_and_streams_lose_and_repeat_nothing(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as http:
        await http.post("/v1/sessions", json={"session_id": "cut", "model": MODEL})
        seen = Watched()
        reader = asyncio.create_task(watch(http, "cut", seen, 3))
        await asyncio.wait_for(seen.connected.wait(), 30)
        first = await http.post("/v1/sessions/cut/messages", params={"wait": 30}, json={"content": "one"})
        assert first.json()["status"] == "completed"
        old = await listener_pid(stack)
        assert old is not None
        # Cut while the second turn runs: what is announced in the gap reaches no one.
        second = await http.post("/v1/sessions/cut/messages", json={"content": "two, across the cut"})
        assert second.status_code == 202
        await stack.sql("SELECT pg_terminate_backend(%s)", old)

        async def replaced() -> bool:
            return (await listener_pid(stack)) not in (None, old)

        await wait_until(replaced)
        third = await http.post("/v1/sessions/cut/messages", params={"wait": 30}, json={"content": "three"})
        assert third.json()["status"] == "completed", third.json()
        await asyncio.wait_for(reader, 30)
    assert seen.ids == list(range(1, len(seen.ids) + 1)), seen.ids
    assert seen.types.count("turn_completed") == 3
    # Deltas only travel through the listener: the new connection delivers them.
    assert third.json()["turn_id"] in seen.delta_turns


async def test_wait_returns_the_finished_turn(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as http:
        key = {"Idempotency-Key": "w-1"}
        body = {"content": "wait for me", "model": MODEL}
        posting = asyncio.create_task(
            http.post("/v1/sessions/waited/messages", params={"wait": 60}, headers=key, json=body)
        )

        async def running() -> bool:
            rows = await stack.sql("SELECT status FROM turns WHERE session_id = 'waited'")
            return bool(rows) and rows[0][0] == "running"

        await wait_until(running)
        # The same key again while the turn runs: it waits for the same turn.
        again = await http.post("/v1/sessions/waited/messages", params={"wait": 60}, headers=key, json=body)
        first = await posting
        run = await http.post("/v1/agent/run", json={"prompt": "and this one", "timeout_s": 60})
    for r in (first, again, run):
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "completed"
    assert first.json()["turn_id"] == again.json()["turn_id"]
    assert "wait for me" in first.json()["output_text"]
    assert "and this one" in run.json()["output_text"]


async def test_announcements_name_every_session_and_stay_under_the_payload_limit(pg_server: str) -> None:
    url = create_database(pg_server)
    await store.migrate(url)
    sids = [f"{i:04d}-" + "x" * 195 for i in range(300)]
    async with await store.connect(url) as conn, await store.connect(url) as listener:
        await listener.execute(f"LISTEN {channels.PROJECTED}".encode())
        async with conn.transaction():
            for n, sid in enumerate(sids):
                await conn.execute(
                    "INSERT INTO sessions (session_id, tenant_id, started_at, last_activity_at, last_seq)"
                    " VALUES (%s, 't', now(), now(), %s)",
                    (sid, n + 1),
                )
            await channels.notify_projected(conn, sids)
            await channels.notify_projected(conn, ["y" * 9000])  # too long for any payload
        announced: dict[str, int] = {}
        everything = 0
        async for note in listener.notifies(timeout=2):
            assert len(note.payload.encode()) < 8000
            seqs = channels.parse_projected(note.payload)
            if seqs is None:
                everything += 1
            else:
                announced.update(seqs)
    assert announced == {sid: n + 1 for n, sid in enumerate(sids)}
    assert everything == 1
