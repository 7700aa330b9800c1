"""SIGKILL of the tool executor before the run, after recording its start, after the run
before the result, and after the result: an Edit applies exactly once; a write command is
never run twice, and one cut short is answered "outcome unknown"."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventstore import events as ev
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from processors.tools.workspace import workspace_for
from tests.faults.test_kill import _exited, _stop, _worker
from tests.services import Stack, stack_on, wait_until

EDIT = {"file_path": "count.txt", "old_string": "count: 1", "new_string": "count: 1+"}


async def _post(stack: Stack, sid: str, line: str) -> None:
    kafka = KafkaLog(stack.settings)
    await kafka.start()
    at = datetime.now(UTC)
    await kafka.append_many(
        [
            ev.session_started(sid, model=OFFLINE_MODEL, at=at),
            ev.user_message(sid, text=line, idempotency_key="a", at=at),
        ]
    )
    await kafka.stop()


async def _completed(stack: Stack) -> bool:
    rows = await stack.sql("SELECT count(*) FROM turns WHERE status = 'completed'")
    return bool(rows[0][0] == 1)


async def _crash_and_recover(
    stack: Stack, log_dir: Path, point: str, extra: dict[str, str] | None = None
) -> tuple[str, bool]:
    env = {"AGENTLOG_WORKSPACE_ROOT": str(stack.settings.workspace_root), **(extra or {})}
    doomed = _worker("tools", stack.settings, log_dir, f"{point}=kill", env)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        assert await wait_until(lambda: _exited(doomed), within=60) == -signal.SIGKILL
        survivor = _worker("tools", stack.settings, log_dir, "", env)
        await wait_until(lambda: _completed(stack), within=60)
    finally:
        _stop(doomed)
        if survivor is not None:
            _stop(survivor)
    (result,) = await stack.sql("SELECT result #>> '{}', is_error FROM tool_calls")
    ledger = await stack.sql("SELECT status FROM effects WHERE kind = 'tool'")
    assert ledger == [("done",)]
    return result[0], result[1]


@pytest.mark.parametrize(
    "point",
    [
        "tool-worker.before_call",
        "tool-worker.after_start",
        "tool-worker.after_call",
        "tool-worker.after_ledger",
        "tool-worker.after_append",
    ],
)
async def test_an_edit_applies_exactly_once(point: str, pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "model")
        target = workspace_for(stack.settings.workspace_root, "default", "e") / "count.txt"
        target.write_text("count: 1\n")
        await _post(stack, "e", f"call Edit {json.dumps(EDIT)}")
        text, is_error = await _crash_and_recover(stack, log_dir, point)
        assert target.read_text() == "count: 1+\n"  # applied twice would read "count: 1++"
        assert (text, is_error) == ("Replaced 1 occurrence in count.txt", False)


async def test_an_edit_whose_file_changed_under_it_is_reported(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "model")
        target = workspace_for(stack.settings.workspace_root, "default", "e") / "count.txt"
        target.write_text("count: 1\n")
        await _post(stack, "e", f"call Edit {json.dumps(EDIT)}")
        env = {"AGENTLOG_WORKSPACE_ROOT": str(stack.settings.workspace_root)}
        doomed = _worker("tools", stack.settings, log_dir, "tool-worker.after_start=kill", env)
        try:
            assert await wait_until(lambda: _exited(doomed), within=60) == -signal.SIGKILL
        finally:
            _stop(doomed)
        target.write_text("someone else was here\n")
        survivor = _worker("tools", stack.settings, log_dir, "", env)
        try:
            await wait_until(lambda: _completed(stack), within=60)
        finally:
            _stop(survivor)
        (row,) = await stack.sql("SELECT result #>> '{}', is_error FROM tool_calls")
        assert row[1] and row[0].startswith("Edit not applied: the file changed under the tool")
        assert target.read_text() == "someone else was here\n"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.parametrize(
    ("point", "lines", "unknown"),
    [
        ("tool-worker.before_call", 1, False),  # never started: it runs once after the restart
        ("tool-worker.after_start", 0, True),  # started, not run: still never rerun
        ("tool-worker.after_call", 1, True),  # ran, result lost: unknown, not run again
        ("tool-worker.after_ledger", 1, False),  # recorded: re-emitted
    ],
)
async def test_a_write_command_is_never_run_twice(
    point: str, lines: int, unknown: bool, pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=2) as stack:
        await stack.start("projector", "reactor", "model")
        workspace = workspace_for(stack.settings.workspace_root, "default", "b")
        await _post(stack, "b", 'call Bash {"command": "echo x >> f"}')
        text, is_error = await _crash_and_recover(stack, log_dir, point)
        got = (workspace / "f").read_text().count("x\n") if (workspace / "f").exists() else 0
        assert got == lines
        assert text.startswith("outcome unknown: the command may or may not have run") == unknown
        assert is_error == unknown
