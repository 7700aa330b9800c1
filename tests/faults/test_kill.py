"""SIGKILL at chosen points: the projector mid-batch, the reactor before its append.
Afterwards no row is lost and none is doubled, and every turn is answered."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from agentlog.replay import rebuild
from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from eventstore.settings import Settings
from tests.services import Stack, projected, snapshot, stack_on, wait_until
from tests.unit.test_fold import run

ROOT = Path(__file__).resolve().parents[2]


def _worker(
    role: str,
    settings: Settings,
    log_dir: Path,
    failpoints: str = "",
    extra: dict[str, str] | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """`agentlog worker ROLE` as a process of its own, logging to `{name or role}-{pid}.log`."""
    env = {
        **(extra or {}),
        **os.environ,
        "AGENTLOG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AGENTLOG_DATABASE_URL": settings.database_url,
        "AGENTLOG_PARTITIONS": str(settings.partitions),
        "AGENTLOG_PROJECTOR_BATCH": "50",
        "AGENTLOG_FAILPOINTS": failpoints,
    }
    with open(log_dir / f"{name or role}-{os.getpid()}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentlog", "worker", role],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _exited(proc: subprocess.Popen[bytes]) -> int | None:
    return proc.poll()


async def kill_then_recover(
    role: str,
    settings: Settings,
    log_dir: Path,
    failpoints: str,
    until: Callable[[], Awaitable[bool]],
    env: dict[str, str] | None = None,
    survivor_env: dict[str, str] | None = None,
) -> None:
    """Run a worker that SIGKILLs itself at a failpoint, then a clean one until `until` holds."""
    doomed = _worker(role, settings, log_dir, failpoints, env)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        assert await wait_until(lambda: _exited(doomed), within=60) == -signal.SIGKILL
        survivor = _worker(role, settings, log_dir, "", env if survivor_env is None else survivor_env)
        await wait_until(until, within=60)
    finally:
        _stop(doomed)
        if survivor is not None:
            _stop(survivor)


def _sessions(n: int) -> list[ev.Event]:
    """Complete sessions made by the pure core (each: start, 2 turns), with copies of some events."""
    out: list[ev.Event] = []
    for i in range(n):
        out += run(["user", "user"], sid=f"k{i}").log
    return out


async def test_projector_killed_mid_batch_loses_and_doubles_nothing(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        events = _sessions(40)
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        for start in range(0, len(events), 100):
            await kafka.append_many(events[start : start + 100])
        await kafka.append_many(events[:60])  # redelivered copies
        await kafka.stop()
        doomed = _worker("projector", stack.settings, log_dir, "projector.mid_batch=kill@170")
        try:
            assert await wait_until(lambda: _exited(doomed), within=60) == -signal.SIGKILL
        finally:
            _stop(doomed)
        partial = (await stack.sql("SELECT count(*) FROM events"))[0][0]
        assert 0 < partial < len(events)
        survivor = _worker("projector", stack.settings, log_dir)
        try:
            await wait_until(lambda: projected(stack, len(events)), within=60)
            await asyncio.sleep(1)  # any doubling would show up by now
        finally:
            _stop(survivor)
        assert (await stack.sql("SELECT count(*) FROM events"))[0][0] == len(events)
        assert await stack.sql("SELECT count(*), sum(turn_count) FROM sessions") == [(40, 80)]
        assert await stack.sql("SELECT count(*) FROM messages") == [(160,)]
        assert await stack.sql("SELECT DISTINCT status FROM turns") == [("completed",)]
        before = await snapshot(stack)
        await rebuild(stack.settings)
        assert await snapshot(stack) == before


async def test_reactor_killed_before_append_still_answers_every_turn(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "model")
        doomed = _worker("reactor", stack.settings, log_dir, "reactor.before_append=kill@3")
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        at = datetime.now(UTC)
        for i in range(6):
            await kafka.append_many(
                [
                    ev.session_started(f"x{i}", model=OFFLINE_MODEL, at=at),
                    ev.user_message(f"x{i}", text=f"hello {i}", idempotency_key="a", at=at),
                ]
            )
        await kafka.stop()
        survivor: subprocess.Popen[bytes] | None = None
        try:
            assert await wait_until(lambda: _exited(doomed), within=60) == -signal.SIGKILL
            survivor = _worker("reactor", stack.settings, log_dir)
            await wait_until(lambda: _all_completed(stack, 6), within=60)
            await asyncio.sleep(1)
        finally:
            _stop(doomed)
            if survivor is not None:
                _stop(survivor)
        assert await stack.sql("SELECT count(*), sum(turn_count) FROM sessions") == [(6, 6)]
        per_turn = await stack.sql(
            "SELECT turn_id, count(*) FILTER (WHERE type = 'turn_started'),"
            " count(*) FILTER (WHERE type = 'model_requested'),"
            " count(*) FILTER (WHERE type = 'assistant_message'),"
            " count(*) FILTER (WHERE type = 'turn_completed')"
            " FROM events WHERE turn_id IS NOT NULL GROUP BY 1"
        )
        assert len(per_turn) == 6 and all(row[1:] == (1, 1, 1, 1) for row in per_turn)


async def _all_completed(stack: Stack, n: int) -> bool:
    rows = await stack.sql("SELECT count(*) FROM turns WHERE status = 'completed'")
    return bool(rows[0][0] == n)
