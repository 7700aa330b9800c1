"""Invariant 11 for model calls: a turn whose model call no worker answers (none running, or
one that lost it for whatever reason) fails by its deadline with that reason, and the
session goes on; a model worker that comes later calls nothing for it."""

from __future__ import annotations

from pathlib import Path

from eventstore.models import OFFLINE_MODEL
from tests.services import stack_on, wait_until


async def test_a_model_call_nobody_answers_fails_by_its_deadline(pg_server: str, log_dir: Path) -> None:
    async with stack_on(
        pg_server, log_dir, model_deadline_s=1.5, expiry_check_s=0.2, default_model=OFFLINE_MODEL
    ) as stack:
        await stack.start("projector", "reactor")  # and no model worker
        await stack.start_api()
        posted = await stack.turn("stuck", "hello", wait=0)

        async def failed() -> list[tuple[str, str]]:
            rows = await stack.sql("SELECT status, error FROM turns WHERE turn_id = %s", posted["turn_id"])
            return [r for r in rows if r[0] == "failed"]

        ((_, error),) = await wait_until(failed, within=30)
        assert error == "no model worker answered step 1 within 1.5 s"
        # A model worker that starts now reads the request, sees the turn ended, calls nothing;
        # the session's next turn is answered.
        await stack.start("model")
        again = await stack.turn("stuck", "again", wait=30)
        assert again["status"] == "completed", again
        calls = await stack.sql("SELECT count(*) FROM model_calls WHERE session_id = 'stuck'")
        assert calls == [(1,)]
