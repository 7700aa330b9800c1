"""A tool that never returns and one that floods (issue 17), through whole turns: the time limit
answers an error result and the turn finishes, also for a tool that swallows its cancellation
or blocks its thread, and the session's next tool call runs; a Bash command printing 1 GB is
stopped at the flood limit, its result cut with a note, the worker's memory bounded.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from processors.tools.bash import Bash
from processors.tools.function import tool
from processors.tools.registry import Echo, Registry
from tests.services import Stack, stack_on

RELEASE = threading.Event()  # lets the stuck tools end when the module is done


@tool(effect="read", timeout_s=0.5)
async def never_returns() -> str:
    """Waits for nothing, forever."""
    await asyncio.Event().wait()
    return "never"


@tool(effect="read", timeout_s=0.5)
async def ignores_cancellation() -> str:
    """Swallows every cancellation (until the module ends): only its caller can move on."""
    while not RELEASE.is_set():
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            continue
    return "late"


@tool(effect="read", timeout_s=0.5)
def blocks_its_thread() -> str:
    """A sync function that blocks (a thread cannot be stopped)."""
    RELEASE.wait(120)
    return "late"


TOOLS = Registry([Echo(), Bash(), never_returns, ignores_cancellation, blocks_its_thread])


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, tool_timeout_s=2) as stack:
        await stack.start_everything(tools=TOOLS)
        yield stack
        RELEASE.set()


@pytest.mark.parametrize("name", ["never_returns", "ignores_cancellation", "blocks_its_thread"])
async def test_a_tool_that_never_returns_is_answered_with_an_error_and_the_turn_finishes(
    stack: Stack, name: str
) -> None:
    sid = f"hang-{name.replace('_', '-')}"
    turn = await stack.turn(sid, f"call {name} {{}}", wait=30)
    assert turn["status"] == "completed", turn
    ((called, result, is_error),) = await stack.tool_calls(sid)
    assert (called, is_error) == (name, True) and "did not finish within 0.5 s" in result, result
    # The session goes on: its next tool call runs (nothing holds its workspace).
    turn = await stack.turn(sid, 'call Echo {"text": "after"}', wait=30)
    assert turn["status"] == "completed" and (await stack.tool_calls(sid))[-1] == ("Echo", "after", False)


async def test_a_command_printing_a_gigabyte_is_cut_and_the_turn_finishes(stack: Stack) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: the Bash tool cannot run")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    command = "head -c 1000000000 /dev/zero | tr '\\0' x; echo done"
    turn = await stack.turn("flood", "call Bash " + json.dumps({"command": command}), wait=60)
    assert turn["status"] == "completed", turn
    ((name, result, _),) = await stack.tool_calls("flood")
    # The model reads a cut result; the whole output (bounded) is stored apart, with the note.
    assert name == "Bash" and "[result cut: showing" in result and len(result) < 40_000, result[-300:]
    ((stored,),) = await stack.sql("SELECT content FROM tool_outputs WHERE session_id = 'flood'")
    assert "[output truncated: the command wrote more than" in stored and len(stored) < 200_000
    assert "done" not in stored  # the command was stopped
    # The flood was read in bounded pieces and dropped: memory grew by far less than 1 GB.
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib
    event = await stack.sql(
        "SELECT octet_length(payload::text) FROM events WHERE session_id = 'flood' AND type = 'tool_result'"
    )
    assert event[0][0] < 200_000
