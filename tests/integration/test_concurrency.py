"""A slow model call of one session does not hold up the other sessions of its partition."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.services import Stack, stack_on, wait_until


async def _in_flight(stack: Stack) -> int:
    return len(stack.workers["model"].serving) if "model" in stack.workers else 0


async def test_model_calls_of_one_partition_run_at_once(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=1, offline_model_latency_ms=3000) as stack:
        await stack.start("projector", "reactor", "model")
        url = await stack.start_api()
        async with httpx.AsyncClient(base_url=url) as client:
            for i in range(6):
                r = await client.post(
                    f"/v1/sessions/c{i}/messages", json={"content": "slow"}, headers={"Idempotency-Key": "c"}
                )
                assert r.status_code == 202
            # All six requests share one partition, yet all are in flight together.
            await wait_until(lambda: _check(stack, 6), within=20, interval=0.01)
            await wait_until(
                lambda: stack.sql(
                    "SELECT 1 FROM sessions"
                    " HAVING count(*) FILTER (WHERE turn_count = 1 AND status = 'idle') = 6"
                ),
                within=30,
            )
        stored = await stack.sql("SELECT next_offset FROM consumer_offsets WHERE consumer = 'model-worker'")
        assert stored and stored[0][0] > 0


async def _check(stack: Stack, n: int) -> bool:
    return await _in_flight(stack) >= n
