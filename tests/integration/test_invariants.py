"""Invariants 1, 4, 5, 6 (in the workers) and 9 of DESIGN.md against a real broker and a real Postgres."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from agentlog.analyst import run_sql
from agentlog.replay import rebuild, replay
from eventstore import codec, store
from eventstore import events as ev
from eventstore.log import KafkaLog, read_partition
from eventstore.models import OFFLINE_MODEL
from tests.services import (
    KEPT_TABLES,
    TABLES,
    UNCOMPARED_TABLES,
    Stack,
    new_epoch,
    snapshot,
    stack_on,
    wait_until,
)


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
        await kafka.append(ev.session_started("p2", model=OFFLINE_MODEL, metadata={"x": "a\u0000b"}))
        await kafka.stop()
        async with httpx.AsyncClient(base_url=url) as client:
            answer = await _turn(client, "p3", "still flowing?", "p3-0")
        assert answer["status"] == "completed"
        # One row per record, naming every consumer that set it aside.
        await wait_until(lambda: _named_by(stack, 3))
        rows = await stack.sql("SELECT consumers, record_value, reason FROM dead_letters ORDER BY log_offset")
        assert [r[1] for r in rows[:2]] == [garbage, b'{"type": "user_message", "session_id": "p1"}']
        assert "undecodable" in rows[0][2] and "projection failed" in rows[2][2]
        every = ["model-worker", "projector", "reactor"]
        assert [sorted(r[0]) for r in rows] == [every, every, ["projector"]]
        dlq = [r async for r in read_partition(stack.settings, 0, topic=codec.DEAD_LETTER_TOPIC)]
        assert [r.value for r in dlq[:2]] == [garbage, rows[1][1]] and len(dlq) == 3
        assert any(h[0] == "dead-letter-reason" for h in dlq[0].headers)


async def _named_by(stack: Stack, consumers: int) -> bool:
    """Whether every undecodable record's dead letter names that many consumers."""
    rows = await stack.sql("SELECT cardinality(consumers) FROM dead_letters WHERE reason LIKE 'undecodable%'")
    return len(rows) == 2 and all(n == consumers for (n,) in rows)


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


def _task(prompt: str) -> str:
    return "call Task " + json.dumps({"description": "a sub-task", "prompt": prompt})


async def _post(client: httpx.AsyncClient, session: str, content: str, **settings: Any) -> dict[str, Any]:
    """A user turn, not waited for."""
    r = await client.post(f"/v1/sessions/{session}/messages", json={"content": content, **settings})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def _pending_approval(client: httpx.AsyncClient, session: str) -> dict[str, Any]:
    async def pending() -> list[dict[str, Any]]:
        r = await client.get(f"/v1/sessions/{session}/approvals", params={"status": "pending"})
        return list(r.json()["data"]) if r.status_code == 200 else []

    (waiting,) = await wait_until(pending)
    return dict(waiting)


async def _decide(client: httpx.AsyncClient, session: str, approval: dict[str, Any], decision: str) -> None:
    r = await client.post(
        f"/v1/sessions/{session}/approvals/{approval['approval_id']}",
        json={"decision": decision, "reason": f"{decision}d in a test"},
    )
    assert r.status_code == 202, r.text


async def _ended(client: httpx.AsyncClient, session: str, turn_id: object) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        r = await client.get(f"/v1/sessions/{session}/turns/{turn_id}")
        body = r.json() if r.status_code == 200 else {}
        return dict(body) if body.get("status") in ("completed", "failed") else None

    return dict(await wait_until(ended))


async def test_rebuild_gives_the_same_rows_for_approvals_sub_agents_and_forks(
    pg_server: str, log_dir: Path
) -> None:
    assert set(TABLES) == {*store.DERIVED_TABLES, "deleted_sessions"}
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "model", "tools", "subagents")
        url = await stack.start_api()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            # Approvals: one approved, one denied, one still pending at the rebuild.
            for text, decision in (("yes", "approve"), ("no", "deny"), ("later", None)):
                accepted = await _post(client, "ap", f'call Echo {{"text": "{text}"}}', approvals=["Echo"])
                waiting = await _pending_approval(client, "ap")
                if decision is not None:
                    await _decide(client, "ap", waiting, decision)
                    assert (await _ended(client, "ap", accepted["turn_id"]))["status"] == "completed"
            # A sub-agent (queue model): a child session of its own, its end relayed to the parent.
            boss = await _turn(client, "boss", _task("Say the word alpha."), "boss-0")
            assert 'You said: "Say the word alpha."' in str(boss["output_text"])
            # Forks: of the parent (then a turn of its own), and of `ap`, cut back before its
            # running turn.
            for source, fork in (("boss", "boss.fork"), ("ap", "ap.fork")):
                r = await client.post(f"/v1/sessions/{source}/fork", json={"session_id": fork})
                assert r.status_code == 201, r.text
            await _turn(client, "boss.fork", "and now?", "bf-0")
        await wait_until(lambda: _partition_consumed(stack, "projector"))
        before = await snapshot(stack)
        kept = await snapshot(stack, KEPT_TABLES)
        assert sorted(r[8] for r in before["approvals"]) == ["approved", "denied", "pending"]
        assert [(r[0], r[10]) for r in before["subagents"]] == [("boss", "completed")]
        forks = await stack.sql(
            "SELECT session_id, forked_from, forked_at_seq, last_seq FROM sessions"
            " WHERE forked_from IS NOT NULL ORDER BY 1"
        )
        (ap_seq,) = await stack.sql("SELECT last_seq FROM sessions WHERE session_id = 'ap'")
        assert [f[:2] for f in forks] == [("ap.fork", "ap"), ("boss.fork", "boss")]
        assert forks[0][2] < ap_seq[0]  # cut back to the last finished turn
        history = await stack.sql(
            "SELECT session_id, count(*) FROM messages WHERE seq = 1 GROUP BY 1 ORDER BY 1"
        )
        assert history == [("ap.fork", 8), ("boss.fork", 4)]  # two tool turns of `ap`, one of `boss`
        assert kept["effects"]
        result = await rebuild(stack.settings)
        assert result["dead_letters"] == 0 and result["applied"] == len(before["events"])
        assert await snapshot(stack) == before
        assert await snapshot(stack, KEPT_TABLES) == kept
        # Nothing else lives in the schema: a new table is either derived or kept, on purpose.
        tables = await stack.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {t for (t,) in tables} == set(TABLES) | set(KEPT_TABLES) | UNCOMPARED_TABLES
        # The rebuilt rows are live: the pending approval can still be decided.
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            waiting = await _pending_approval(client, "ap")
            await _decide(client, "ap", waiting, "approve")
            done = await _ended(client, "ap", waiting["turn_id"])
            assert done["status"] == "completed" and "later" in str(done["output_text"])


async def test_new_log_epoch_keeps_a_pending_approval_and_finishes_sub_agents_in_flight(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as first:
        await first.start("projector", "reactor", "model", "subagents")
        url = await first.start_api()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = await _post(client, "held", 'call Echo {"text": "approved later"}', approvals=["Echo"])
            waiting = await _pending_approval(client, "held")
            # No tool worker: this child is running, waiting on its tool call, at the new epoch.
            boss = await _post(client, "boss", _task('call Echo {"text": "from the child"}'))
            await wait_until(
                lambda: first.sql(
                    "SELECT 1 FROM tool_calls c JOIN sessions s USING (session_id)"
                    " WHERE s.parent_session_id = 'boss' AND c.status = 'requested'"
                )
            )
            # No sub-agent worker: this child is asked for but not started at the new epoch.
            await first.stop_role("subagents")
            late = await _post(client, "late", _task("Say the word beta."))
            await wait_until(lambda: first.sql("SELECT 1 FROM subagents WHERE parent_session_id = 'late'"))
            # A session deleted in the old epoch stays deleted (its tombstone is in no new log).
            await _turn(client, "gone", "forget me", "gone-0")
            await client.delete("/v1/sessions/gone")
        await wait_until(lambda: first.sql("SELECT 1 FROM deleted_sessions"))
        await wait_until(lambda: _partition_consumed(first, "projector"))
        children = await first.sql("SELECT child_session_id FROM subagents ORDER BY parent_session_id")
        second = await new_epoch(first, log_dir)
        try:
            await second.start("projector", "reactor", "model", "tools", "subagents")
            url = await second.start_api()
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                assert await _pending_approval(client, "held") == waiting
                for session, accepted, said in (
                    ("boss", boss, "from the child"),
                    ("late", late, 'You said: "Say the word beta."'),
                ):
                    done = await _ended(client, session, accepted["turn_id"])
                    assert done["status"] == "completed" and said in str(done["output_text"]), done
                await _decide(client, "held", waiting, "approve")
                done = await _ended(client, "held", held["turn_id"])
                assert done["status"] == "completed" and "approved later" in str(done["output_text"])
                assert (await client.get("/v1/sessions/gone")).status_code == 404
            # Each child ran once, on its first attempt: resumed, not started again.
            rows = await second.sql(
                "SELECT parent_session_id, attempt, status, child_session_id FROM subagents ORDER BY 1"
            )
            assert [r[:3] for r in rows] == [("boss", 1, "completed"), ("late", 1, "completed")]
            assert [(r[3],) for r in rows] == children
            starts = await second.sql(
                "SELECT count(*) FROM events WHERE type = 'session_started' AND session_id = ANY(%s)",
                [c for (c,) in children],
            )
            assert starts == [(2,)]
            approvals = await second.sql("SELECT status FROM approvals WHERE session_id = 'held'")
            assert approvals == [("approved",)]
            # Invariant 4 across epochs: a rebuild re-projects the older epoch from Postgres.
            await wait_until(lambda: _partition_consumed(second, "projector"))
            before = await snapshot(second)
            assert len({r[0]["log_epoch"] for r in before["events"]}) == 2
            assert before["deleted_sessions"] and before["approvals"] and before["subagents"]
            result = await rebuild(second.settings)
            assert result["dead_letters"] == 0 and result["older_epoch_events"] > 0
            assert await snapshot(second) == before
        finally:
            await second.stop_all()
            second.broker.stop()


async def _refused(stack: Stack, count: int) -> bool:
    """Whether `count` records are dead letters refused for their tenant by every consumer running."""
    rows = await stack.sql("SELECT consumers FROM dead_letters WHERE reason LIKE '%which tenant%'")
    return len(rows) == count and all(set(r[0]) >= {"projector", "reactor", "model-worker"} for r in rows)


async def test_a_message_forged_for_another_tenants_session_is_refused_in_the_workers(
    pg_server: str, log_dir: Path
) -> None:
    """Invariant 6 past the api: a user_message appended straight to the log under another
    tenant is a dead letter (issue 17): it reaches no model, no turn and no transcript, and
    that tenant sees nothing of the session."""
    tokens = {"tenant-a": "tok-a", "tenant-b": "tok-b"}
    stored = "tenant-a~mine"  # the session tenant-a knows as `mine` (eventstore.ids)
    async with stack_on(
        pg_server, log_dir, auth_required=True, api_tokens=",".join(f"{v}:{k}" for k, v in tokens.items())
    ) as stack:
        await stack.start("projector", "reactor", "model")
        url = await stack.start_api()
        a = httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": "Bearer tok-a"})
        b = httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": "Bearer tok-b"})
        async with a, b:
            # No tool worker yet: the owner's turn is running (on its tool call) when the forged
            # message comes, and the policy would let a message of the owner interrupt it.
            mine = await _post(a, "mine", 'call Echo {"text": "mine"}', policy="interrupt")
            await wait_until(lambda: stack.sql("SELECT 1 FROM tool_calls WHERE status = 'requested'"))
            kafka = KafkaLog(stack.settings)
            await kafka.start()
            forged = [
                ev.user_message(
                    stored, text=f"forged {n}", idempotency_key=f"forged-{n}", tenant_id="tenant-b"
                )
                for n in range(2)
            ]
            await kafka.append(forged[0])
            await wait_until(lambda: _refused(stack, 1))
            await stack.start("tools")
            done = await _ended(a, "mine", mine["turn_id"])
            # Nor can another tenant take the session over by starting it again.
            restart = ev.session_started(stored, model="x", tenant_id="tenant-b", system="pwned")
            await kafka.append(restart.model_copy(update={"event_id": uuid.uuid4()}))
            await kafka.append(forged[1])  # and once more, the session idle
            await wait_until(lambda: _refused(stack, 3))
            await kafka.stop()
            assert done["status"] == "completed" and "mine" in str(done["output_text"])
            for f in forged:
                assert (await a.get(f"/v1/sessions/mine/turns/{f.turn_id}")).status_code == 404
            # No model call for the forged turns: the owner's turn made its two, nothing more.
            assert stack.workers["model"].calls == 2
            asked = await stack.sql(
                "SELECT DISTINCT turn_id FROM events WHERE type IN ('turn_started', 'model_requested')"
            )
            assert asked == [(mine["turn_id"],)]
            # The owner's session is as the owner made it: tenant, transcript, turn, not interrupted.
            session = (await a.get("/v1/sessions/mine")).json()
            assert session["metadata"]["turn_count"] == 1
            assert [m["role"] for m in session["messages"]] == ["user", "assistant"] * 2
            assert "forged" not in json.dumps(session["messages"])
            state = await replay(stack.settings, stored, "postgres")
            assert state.tenant_id == "tenant-a" and len(state.messages) == 4
            rows = await stack.sql(
                "SELECT tenant_id, status FROM sessions WHERE session_id = 'tenant-a~mine'"
            )
            assert rows == [("tenant-a", "idle")]
            owner_turn = await stack.sql(
                "SELECT status, interrupted FROM turns WHERE turn_id = %s", mine["turn_id"]
            )
            assert owner_turn == [("completed", False)]
            # The forging tenant sees nothing of it.
            assert "mine" not in {s["id"] for s in (await b.get("/v1/sessions")).json()["data"]}
            for path in ("", "/events", f"/turns/{forged[0].turn_id}", "/approvals"):
                assert (await b.get(f"/v1/sessions/mine{path}")).status_code == 404, path
        # Nor as an analyst: not even the events it wrote, which were never projected.
        url = stack.settings.database_url
        for table in ("sessions", "messages", "tool_calls", "effects", "events"):
            _, rows = await run_sql(
                url, f"SELECT * FROM {table} WHERE session_id = 'tenant-a~mine'", "tenant-b"
            )
            assert rows == [], table
