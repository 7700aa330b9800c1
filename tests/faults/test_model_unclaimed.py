"""Invariant 11, before the deadline: a model call that no worker took (no ledger row: no
lease, no outcome) is asked for once more after `AGENTLOG_MODEL_UNCLAIMED_S` — a request a
worker passed over is served long before the turn's deadline — and the ledger keeps it one
call however many times it was asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventstore.models import OFFLINE_MODEL
from tests.services import Stack, stack_on, wait_until


async def _requests(stack: Stack, turn_id: str) -> int:
    rows = await stack.sql(
        "SELECT count(*) FROM events WHERE type = 'model_requested' AND turn_id = %s", turn_id
    )
    return int(rows[0][0])


async def test_a_model_call_nobody_took_is_asked_again_once_and_made_once(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(
        pg_server,
        log_dir,
        model_unclaimed_s=1.0,
        model_deadline_s=120,
        expiry_check_s=0.2,
        default_model=OFFLINE_MODEL,
    ) as stack:
        await stack.start("projector", "reactor")  # and no model worker yet
        await stack.start_api()
        posted = await stack.turn("idle-model", "hello", wait=0)
        turn_id = posted["turn_id"]

        async def asked_twice() -> bool:
            return await _requests(stack, turn_id) == 2

        await wait_until(asked_twice, within=30)
        await asyncio.sleep(2.5)  # more than twice the wait again: asked once more, not again
        assert await _requests(stack, turn_id) == 2
        await stack.start("model")

        async def ended() -> list[tuple[str]]:
            return await stack.sql(
                "SELECT status FROM turns WHERE turn_id = %s AND status <> 'running'", turn_id
            )

        assert await wait_until(ended, within=30) == [("completed",)]
        # Two requests, one call, one answer in the transcript.
        assert await stack.sql("SELECT count(*) FROM model_calls WHERE session_id = 'idle-model'") == [(1,)]
        assert stack.workers["model"].calls == 1
        roles = await stack.sql("SELECT role FROM messages WHERE session_id = 'idle-model' ORDER BY seq")
        assert roles == [("user",), ("assistant",)]
