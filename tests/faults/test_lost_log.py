"""A log lost with records the api acknowledged and nobody projected (issue 17): the embedded
broker keeps its log in memory, so the api keeps what it appends in Postgres (the outbox,
eventstore/outbox.py) until the projection has it, and the projector appends again what the
new log does not hold. The turn the api answered 202 runs on the new log, once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from eventstore import events as ev
from eventstore.errors import LogError
from eventstore.log import KafkaLog
from eventstore.outbox import DurableLog
from processors.run import ROLES
from tests.services import new_epoch, stack_on, wait_until

FAST = {"partitions": 2, "outbox_sweep_s": 0.5, "kafka_append_timeout_s": 2.0}


async def test_a_turn_acknowledged_before_the_log_was_lost_runs_on_the_new_log(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, **FAST) as stack:
        # Only the api: what it acknowledges is in the log and in the outbox, nowhere else.
        api = await stack.start_api()
        async with httpx.AsyncClient(base_url=api) as client:
            r = await client.post("/v1/sessions/lost/messages", json={"content": "hello"})
            kept = await client.post("/v1/sessions/kept/messages", json={"content": "hi"})
        assert r.status_code == kept.status_code == 202, r.text
        turn_id = r.json()["turn_id"]
        assert await stack.sql("SELECT count(*) FROM api_outbox") == [(4,)]  # 2 × started + message

        fresh = await new_epoch(stack, log_dir)  # the broker and its log gone; Postgres stays
        try:
            await fresh.start(*ROLES)
            await fresh.start_api()

            async def finished() -> list[tuple[str, int]]:
                return await fresh.sql(
                    "SELECT status, count(*) OVER () FROM turns WHERE turn_id = %s AND status = 'completed'",
                    turn_id,
                )

            assert await wait_until(finished, within=60) == [("completed", 1)]
            await wait_until(
                lambda: fresh.sql("SELECT 1 FROM turns WHERE session_id = 'kept' AND status = 'completed'")
            )
            # Once: one user message and one answer each, the outbox emptied by the projection.
            assert await fresh.sql(
                "SELECT session_id, type, count(*) FROM events"
                " WHERE type IN ('user_message', 'assistant_message') GROUP BY 1, 2 ORDER BY 1, 2"
            ) == [
                ("kept", "assistant_message", 1),
                ("kept", "user_message", 1),
                ("lost", "assistant_message", 1),
                ("lost", "user_message", 1),
            ]
            await wait_until(lambda: fresh.sql("SELECT 1 WHERE NOT EXISTS (SELECT FROM api_outbox)"))
            assert fresh.workers["model"].calls == 2
            assert fresh.workers["projector"].sweep.appended_again == 4
            # A turn on the new log is projected before any sweep could take it: nothing again.
            after = await fresh.turn("lost", "again")
            assert after["status"] == "completed", after
            await wait_until(lambda: fresh.sql("SELECT 1 WHERE NOT EXISTS (SELECT FROM api_outbox)"))
            assert fresh.workers["projector"].sweep.appended_again == 4
        finally:
            await fresh.stop_all()
            fresh.broker.stop()


async def test_an_append_that_fails_keeps_nothing(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, **FAST) as stack:
        await stack.start_api()
        durable = stack.api_app.state.kafka
        assert isinstance(durable, DurableLog)
        broken = DurableLog(KafkaLog(stack.settings), durable.pool)  # never started: every send fails
        started = ev.session_started("failed", model="m", tenant_id="default")
        with pytest.raises(LogError):
            await broken.append(started)
        assert await stack.sql("SELECT count(*) FROM api_outbox") == [(0,)]
