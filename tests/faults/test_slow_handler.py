"""A handler slower than the poll interval (issue 17, item 5): two reactor replicas in their
consumer group, one of which stalls inside a reaction (a blocking sleep at the failpoint
`reactor.after_consume`: its event loop stops, its faust consumer thread and heartbeats go
on) for longer than `AGENTLOG_KAFKA_MAX_POLL_INTERVAL_MS`. aiokafka makes it leave the
group, the other replica is assigned its partitions and claims them at a higher generation
while it still sleeps; when it wakes, its offsets are refused (fenced), its late reactions
carry the ids the other replica's did, and every posted turn finishes exactly once
(invariants 2, 3 and 10).

The reactor is the role whose handler runs inline: the effect workers hand each request
to a task of its own, so only a stall of the whole process stops their polling.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from agentlog.testing import checks
from tests.faults.test_kill import _stop, _worker
from tests.services import Stack, stack_on, wait_until

SESSIONS = 6
TURNS = 2
POLL_MS = 2_000
# The embedded broker moves the stalled member's partitions once its session timed out
# (about one session timeout after it left) and half a rebalance timeout later: ~2 + 4 + 2 s
# (8.6 s measured); the stall lasts longer, with room for a busy machine.
STALL_S = 14
GROUP = {
    "AGENTLOG_CONSUMER_GROUPS": "true",
    "AGENTLOG_KAFKA_SESSION_TIMEOUT_MS": "4000",
    "AGENTLOG_KAFKA_REBALANCE_TIMEOUT_MS": "4000",
    "AGENTLOG_KAFKA_MAX_POLL_INTERVAL_MS": str(POLL_MS),
}


async def _owners(stack: Stack) -> dict[int, tuple[str, int]]:
    rows = await stack.sql(
        "SELECT log_partition, owner, generation FROM partition_owners WHERE consumer = 'reactor'"
    )
    return {int(p): (str(owner), int(gen)) for p, owner, gen in rows}


async def _load(stack: Stack, posted: list[tuple[str, str]]) -> None:
    """SESSIONS sessions posting TURNS turns one after another, each with a Bash append (and
    every second one a sub-agent); each acknowledged turn goes to `posted`."""

    async def session(sid: str) -> None:
        async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=90) as client:
            for n in range(TURNS):
                key = f"{sid}-{n}"
                r = await client.post(
                    f"/v1/sessions/{sid}/messages",
                    params={"wait": 60},
                    json={"content": checks.turn_content(sid, n, subagent=n == 1)},
                    headers={"Idempotency-Key": key},
                )
                assert r.status_code in (200, 202), (key, r.status_code, r.text)
                posted.append((sid, key))

    await asyncio.gather(*(session(f"slow{i}") for i in range(SESSIONS)))


async def test_a_reactor_stalled_past_its_poll_interval_is_fenced_and_every_turn_ends_once(
    pg_server: str, log_dir: Path
) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: the Bash tool cannot run")
    async with stack_on(pg_server, log_dir, partitions=4) as stack:
        await stack.start("projector", "model", "tools", "subagents")
        await stack.start_api()
        log = log_dir / f"reactor-slow-{os.getpid()}.log"
        start = log.stat().st_size if log.exists() else 0
        failpoint = f"reactor.after_consume=sleep:{STALL_S}@3"
        slow = _worker(
            "reactor",
            stack.settings,
            log_dir,
            failpoint,
            {**GROUP, "AGENTLOG_INSTANCE": "slow"},
            "reactor-slow",
        )
        steady = _worker(
            "reactor", stack.settings, log_dir, "", {**GROUP, "AGENTLOG_INSTANCE": "steady"}, "reactor-steady"
        )
        try:

            async def shared() -> dict[int, tuple[str, int]] | None:
                owners = await _owners(stack)
                held = {owner for owner, _ in owners.values()}
                return owners if len(owners) == 4 and held == {"slow", "steady"} else None

            before = await wait_until(shared, within=40, interval=0.2)
            held = {p for p, (owner, _) in before.items() if owner == "slow"}
            posted: list[tuple[str, str]] = []
            loading = asyncio.create_task(_load(stack, posted))

            async def stalled() -> bool:
                return "stalling" in log.read_text(errors="replace")[start:]

            await wait_until(stalled, within=30, interval=0.1)
            stalled_at = time.monotonic()

            async def taken_over() -> dict[int, tuple[str, int]] | None:
                owners = await _owners(stack)
                return owners if all(owners[p][0] == "steady" for p in held) else None

            after = await wait_until(taken_over, within=STALL_S + 10, interval=0.2)
            # The rebalance came from the stall, not from the replica coming back.
            assert time.monotonic() - stalled_at < STALL_S, "no rebalance while the handler stalled"
            assert all(after[p][1] > before[p][1] for p in held), (before, after)
            await asyncio.wait_for(loading, 90)

            async def woke_fenced() -> bool:
                return "refused" in log.read_text(errors="replace")[start:]

            # Back from its stall, it finishes the reaction the other replica made again (its
            # late appends carry the same event ids), and its offsets for the partitions it
            # lost are refused: it stops (and `agentlog up` restarts it), or, had the revocation
            # come first, it joins the group again.
            await wait_until(woke_fenced, within=STALL_S + 20, interval=0.2)

            async def ended() -> bool:
                return checks.ended(stack.settings.database_url, "slow", len(posted))

            await wait_until(ended, within=60, interval=0.2)
            await asyncio.sleep(1)  # the projector's last batch, the late reactions included
            verdict = checks.check(stack.settings.database_url, stack.settings.workspace_root, "slow", posted)
            assert verdict.clean() and not verdict.failed and verdict.posted == SESSIONS * TURNS, verdict
        finally:
            _stop(slow)
            _stop(steady)
