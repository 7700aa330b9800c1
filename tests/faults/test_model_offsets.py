"""Issue 17's stuck turn under kills: the model worker SIGKILLed right after saving an offset,
then right after catching up, under a load of concurrent turns; afterwards every model
request has its call in the ledger or its answer in the log, and every turn completed."""

from __future__ import annotations

import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from tests.faults.test_kill import _exited, _stop, _worker
from tests.integration.test_stuck_requests import UNSERVED
from tests.services import Stack, stack_on, wait_until

SESSIONS = 12


def _two_turns(session_id: str) -> list[ev.Event]:
    """A session started with two user messages: the second turn queued behind the first."""
    at = datetime.now(UTC)
    started = ev.session_started(session_id, model=OFFLINE_MODEL, at=at)
    return [started, *(ev.user_message(session_id, text=n, idempotency_key=n, at=at) for n in ("1", "2"))]


async def _completed(stack: Stack) -> bool:
    rows = await stack.sql("SELECT count(*) FROM turns WHERE status = 'completed'")
    return bool(rows[0][0] == 2 * SESSIONS)


async def test_model_worker_killed_at_its_offsets_and_catch_up_serves_every_request(
    pg_server: str, log_dir: Path
) -> None:
    # Not the reactor asking again (its own test): the offsets and the catch-up must do it.
    async with stack_on(pg_server, log_dir, partitions=2, model_unclaimed_s=600) as stack:
        await stack.start("projector", "reactor")
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        await kafka.append_many([e for i in range(SESSIONS) for e in _two_turns(f"o{i}")])
        await kafka.stop()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for failpoint in ("model-worker.after_save_offset=kill@2", "model-worker.after_caught_up=kill@1"):
                procs.append(_worker("model", stack.settings, log_dir, failpoint))
                assert await wait_until(lambda: _exited(procs[-1]), within=60) == -signal.SIGKILL
            procs.append(_worker("model", stack.settings, log_dir))
            try:
                await wait_until(lambda: _completed(stack), within=60)
            finally:
                assert await stack.sql(UNSERVED) == []
        finally:
            for proc in procs:
                _stop(proc)
        answers = await stack.sql(
            "SELECT count(*), count(DISTINCT (turn_id, step)) FROM events WHERE type = 'assistant_message'"
        )
        assert answers == [(2 * SESSIONS, 2 * SESSIONS)]
