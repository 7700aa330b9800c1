"""SIGKILL of an executor that runs users' tools (AGENTLOG_TOOL_MODULES), at the failpoints
around the run: a `write` tool cut short between run and record is answered "outcome
unknown" and never run again; a `read` tool runs again, or its recorded result is reused;
a `guarded_write` tool's check decides; every delivery of a call sees the same
idempotency key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventstore import ids
from processors.tools.workspace import workspace_for
from tests.faults.test_tool_crashes import _crash_and_recover, _post
from tests.services import stack_on

MODULES = "tests.custom_tools"
INPUTS: dict[str, dict[str, object]] = {
    "charge": {"order_id": "o-7", "amount_cents": 5},
    "lookup": {"order_id": "o-7"},
    "set_price": {"sku": "p-1", "cents": 99},
}
LOGS = {"charge": "charges.log", "lookup": "lookups.log", "set_price": "prices.log"}
ANSWERS = {
    ("lookup", "tool-worker.after_call"): '{"order_id": "o-7", "status": "paid"}',
    ("lookup", "tool-worker.after_ledger"): '{"order_id": "o-7", "status": "paid"}',
    ("set_price", "tool-worker.after_start"): "p-1 costs 99 cents",
    ("set_price", "tool-worker.after_call"): "done: the set_price call had taken effect before the executor"
    " stopped (its check confirms it); it was not run again",
}


def _runs(log: Path) -> list[str]:
    """The idempotency key each run of the tool was given, one line per run."""
    return [line.split()[-1] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize(
    ("tool", "point", "runs", "unknown"),
    [
        ("charge", "tool-worker.after_call", 1, True),  # ran, not recorded: unknown, not rerun
        ("lookup", "tool-worker.after_call", 2, False),  # a read runs again, with the same key
        ("lookup", "tool-worker.after_ledger", 1, False),  # recorded: the result is reused
        ("set_price", "tool-worker.after_start", 1, False),  # the check finds it not done: run
        ("set_price", "tool-worker.after_call", 1, False),  # the check finds it done: not rerun
    ],
)
async def test_a_users_tool_after_a_kill(
    tool: str, point: str, runs: int, unknown: bool, pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=2, tool_modules=[MODULES]) as stack:
        await stack.start("projector", "reactor", "model")
        workspace = workspace_for(stack.settings.workspace_root, "default", "k")
        tool_input = INPUTS[tool]
        await _post(stack, "k", f"call {tool} {json.dumps(tool_input)}")
        text, is_error = await _crash_and_recover(stack, log_dir, point, {"AGENTLOG_TOOL_MODULES": MODULES})
        (key,) = await stack.sql("SELECT effect_key FROM effects WHERE kind = 'tool'")
        seen = _runs(workspace / LOGS[tool])
        assert seen == [str(ids.derive(key[0]))] * runs  # the same key on every delivery
        assert is_error == unknown
        if unknown:
            assert text.startswith("outcome unknown: the charge call may or may not have run")
        else:
            assert text == ANSWERS[(tool, point)]
