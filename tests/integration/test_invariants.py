"""Invariants 1, 4, 5 and 9 of DESIGN.md against a real broker and a real Postgres."""

from __future__ import annotations

from pathlib import Path

import httpx

from agentlog.replay import rebuild, replay
from eventstore import codec
from eventstore import events as ev
from eventstore.log import KafkaLog, read_partition
from tests.services import new_epoch, snapshot, stack_on, wait_until


async def _turn(client: httpx.AsyncClient, session: str, text: str, key: str) -> dict[str, object]:
    r = await client.post(
        f"/v1/sessions/{session}/messages",
        params={"wait": 30},
        json={"content": text},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


async def test_replay_from_kafka_postgres_and_reactor_agree_with_duplicates(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start("projector", "reactor", "model")
        url = await stack.start_api()
        async with httpx.AsyncClient(base_url=url) as client:
            for s in range(4):
                for t in range(2):
                    await _turn(client, f"r{s}", f"turn {t} of r{s}", f"r{s}-{t}")
        # Redelivery: append copies of every event of r0 again, as a producer retry would.
        total = (await stack.sql("SELECT count(*) FROM events"))[0][0]
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        originals = await replay(stack.settings, "r0", "kafka")
        copies = [e for e in await _kafka_events(stack.settings, "r0")]
        for event in copies:
            await kafka.append(event)
        await kafka.stop()
        await wait_until(lambda: _partition_consumed(stack, "projector"))
        assert (await stack.sql("SELECT count(*) FROM events"))[0][0] == total
        for s in range(4):
            from_kafka = await replay(stack.settings, f"r{s}", "kafka")
            from_pg = await replay(stack.settings, f"r{s}", "postgres")
            assert from_kafka == from_pg
            assert from_pg.turn_count == 2 and from_pg.status == "idle"
            count = from_pg.event_count
            await wait_until(lambda s=s, count=count: _reactor_has(stack, f"r{s}", count))
            assert stack.workers["reactor"].cache.states[f"r{s}"] == from_pg
        assert originals == await replay(stack.settings, "r0", "postgres")


async def _kafka_events(settings: object, session: str) -> list[ev.Event]:
    from agentlog.replay import events_from_kafka

    return await events_from_kafka(settings, session)  # type: ignore[arg-type]


async def _partition_consumed(stack: object, consumer: str) -> bool:
    # The consumer's stored offsets have reached every record currently in the log.
    from eventstore.log import partition_count

    s = stack.settings  # type: ignore[attr-defined]
    ends = {}
    for partition in range(await partition_count(s)):
        last = -1
        async for record in read_partition(s, partition):
            last = record.offset
        ends[partition] = last + 1
    rows = await stack.sql(  # type: ignore[attr-defined]
        "SELECT log_partition, next_offset FROM consumer_offsets WHERE consumer = %s", consumer
    )
    stored = dict(rows)
    return all(stored.get(p, 0) >= end for p, end in ends.items())


async def _reactor_has(stack: object, session: str, count: int) -> bool:
    worker = stack.workers.get("reactor")  # type: ignore[attr-defined]
    state = worker.cache.states.get(session) if worker else None
    return state is not None and state.event_count >= count


async def test_rebuild_gives_the_same_rows(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        url = await stack.start_api()
        async with httpx.AsyncClient(base_url=url) as client:
            for s in range(3):
                for t in range(2):
                    await _turn(client, f"b{s}", f"hello {t}", f"b{s}-{t}")
            # A tool turn: two model calls, a tool request and its result.
            await _turn(client, "bt", 'call Echo {"text": "x"}\ncall Echo {"text": "y"}', "bt-0")
            await client.delete("/v1/sessions/b2")
        await wait_until(lambda: stack.sql("SELECT 1 FROM deleted_sessions"))
        await wait_until(lambda: _partition_consumed(stack, "projector"))
        before = await snapshot(stack)
        assert len(before["events"]) == 2 * (1 + 2 * 5) + 12  # b2 deleted; bt: start, user, 10 more
        assert len(before["tool_calls"]) == 2 and len(before["deleted_sessions"]) == 1
        result = await rebuild(stack.settings)
        assert result["dead_letters"] == 0
        assert await snapshot(stack) == before


async def test_poison_events_are_dead_lettered_and_the_partition_flows(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=1) as stack:
        await stack.start("projector", "reactor", "model")
        url = await stack.start_api()
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        garbage = b"\x00\x01 not an event"
        await kafka.append_raw(b"p1", garbage, [])
        await kafka.append_raw(b"p1", b'{"type": "user_message", "session_id": "p1"}', [])
        # Decodes, but Postgres cannot store a NUL character in jsonb: a projection failure.
        await kafka.append(ev.session_started("p2", model="agentlog-offline-1", metadata={"x": "a\u0000b"}))
        await kafka.stop()
        async with httpx.AsyncClient(base_url=url) as client:
            answer = await _turn(client, "p3", "still flowing?", "p3-0")
        assert answer["status"] == "completed"
        rows = await stack.sql(
            "SELECT consumer, record_value, reason FROM dead_letters ORDER BY consumer, log_offset"
        )
        projector = [r for r in rows if r[0] == "projector"]
        assert [r[1] for r in projector[:2]] == [garbage, b'{"type": "user_message", "session_id": "p1"}']
        assert "undecodable" in projector[0][2] and "projection failed" in projector[2][2]
        assert {r[0] for r in rows} == {"projector", "reactor", "model-worker"}
        dlq = [r async for r in read_partition(stack.settings, 0, topic=codec.DEAD_LETTER_TOPIC)]
        assert garbage in [r.value for r in dlq]
        assert any(h[0] == "dead-letter-reason" for h in dlq[0].headers)


async def test_new_log_epoch_keeps_sessions_and_resumes_unfinished_turns(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir) as first:
        await first.start("projector", "reactor", "model")
        url = await first.start_api()
        async with httpx.AsyncClient(base_url=url) as client:
            await _turn(client, "old", "remember me", "old-0")
            # No tool worker yet: this turn waits on its tool call when the broker goes away.
            r = await client.post(
                "/v1/sessions/tooled/messages", json={"content": 'call Echo {"text": "later"}'}
            )
            assert r.status_code == 202
            await wait_until(lambda: first.sql("SELECT 1 FROM tool_calls WHERE status = 'requested'"))
            await first.stop_role("model")
            r = await client.post(
                "/v1/sessions/pending/messages",
                json={"content": "answer me later"},
                headers={"Idempotency-Key": "p-0"},
            )
            assert r.status_code == 202
        await wait_until(
            lambda: first.sql(
                "SELECT 1 FROM turns WHERE session_id = 'pending' AND status = 'running' AND steps = 1"
            )
        )
        old_epoch = (await first.sql("SELECT DISTINCT log_epoch FROM events"))[0][0]
        second = await new_epoch(first, log_dir)
        try:
            await second.start("projector", "reactor", "model", "tools")
            url = await second.start_api()
            await wait_until(
                lambda: second.sql(
                    "SELECT 1 FROM turns WHERE session_id = 'pending' AND status = 'completed'"
                )
            )
            await wait_until(
                lambda: second.sql("SELECT 1 FROM turns WHERE session_id = 'tooled' AND status = 'completed'")
            )
            tooled = await second.sql(
                "SELECT t.steps, c.status, c.result FROM turns t JOIN tool_calls c USING (session_id)"
                " WHERE session_id = 'tooled'"
            )
            assert tooled == [(2, "ok", "later")]
            async with httpx.AsyncClient(base_url=url) as client:
                answer = await _turn(client, "old", "and now?", "old-1")
                assert "turn 2 of our conversation" in str(answer["output_text"])
                session = (await client.get("/v1/sessions/old")).json()
            assert [m["role"] for m in session["messages"]] == ["user", "assistant"] * 2
            assert session["metadata"]["turn_count"] == 2
            epochs = await second.sql("SELECT DISTINCT log_epoch FROM consumer_offsets")
            assert len(epochs) == 2 and (old_epoch,) in epochs
            seqs = await second.sql("SELECT session_id, array_agg(seq ORDER BY seq) FROM events GROUP BY 1")
            for _, got in seqs:
                assert got == list(range(1, len(got) + 1))
            replayed = await replay(second.settings, "pending", "postgres")
            assert replayed.turns[0].status == "completed" and replayed.turn_count == 1
        finally:
            await second.stop_all()
            second.broker.stop()
