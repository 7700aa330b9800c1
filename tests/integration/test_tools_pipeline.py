"""The built-in tools through the whole pipeline: the api, the offline model's `call` lines,
the reactor, the tool executor in the session's workspace, Postgres."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from processors.tools.workspace import workspace_for
from tests.services import Stack, stack_on, wait_until


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, tool_result_max_chars=2000) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


def call(tool: str, **tool_input: Any) -> str:
    return f"call {tool} {json.dumps(tool_input)}"


async def turn(stack: Stack, sid: str, *lines: str, wait: float = 30, **session: Any) -> dict[str, Any]:
    return await stack.turn(sid, "\n".join(lines), wait, **session)


async def results(stack: Stack, sid: str) -> list[tuple[str, str, bool]]:
    return await stack.tool_calls(sid)


async def test_write_edit_read_grep_glob_in_the_session_workspace(stack: Stack) -> None:
    done = await turn(stack, "files", call("Write", file_path="notes/a.txt", content="hello\nworld\n"))
    assert done["status"] == "completed" and "Wrote 12 bytes to notes/a.txt" in done["output_text"]
    await turn(
        stack, "files", call("Edit", file_path="notes/a.txt", old_string="world", new_string="agentlog")
    )
    read = await turn(stack, "files", call("Read", file_path="notes/a.txt"))
    assert ": 1\thello" in read["output_text"].replace("     ", " ")
    both = await turn(stack, "files", call("Grep", pattern="agent"), call("Glob", pattern="**/*.txt"))
    assert both["status"] == "completed"
    workspace = workspace_for(stack.settings.workspace_root, "default", "files")
    assert (workspace / "notes" / "a.txt").read_text() == "hello\nagentlog\n"
    got = await results(stack, "files")
    assert got[-2:] == [("Glob", "notes/a.txt", False), ("Grep", "notes/a.txt:2:agentlog", False)]
    refused = await turn(stack, "files", call("Read", file_path="../../etc/passwd"))
    assert "(error): '../../etc/passwd' is outside the workspace" in refused["output_text"]
    # Another session has a workspace of its own.
    other = await turn(stack, "other", call("Read", file_path="notes/a.txt"))
    assert "(error): notes/a.txt does not exist" in other["output_text"]


async def test_a_large_result_is_stored_whole_and_the_model_sees_it_cut(stack: Stack) -> None:
    big = "\n".join(f"line {i:05d} " + "x" * 40 for i in range(300))
    await turn(stack, "big", call("Write", file_path="big.txt", content=big))
    done = await turn(stack, "big", call("Read", file_path="big.txt"))
    assert done["status"] == "completed"
    row = await stack.sql(
        "SELECT e.payload->>'stored_sha256', (e.payload->>'total_chars')::int, length(e.payload->>'content'),"
        " o.chars, o.content FROM events e JOIN tool_outputs o ON o.sha256 = e.payload->>'stored_sha256'"
        " WHERE e.session_id = 'big' AND e.type = 'tool_result'"
    )
    (digest, total, shown, chars, whole) = row[0]
    assert total == chars == len(whole) > 2000 and shown < 2200 and digest
    assert whole.splitlines()[299].endswith("line 00299 " + "x" * 40)
    cut = await stack.sql("SELECT result #>> '{}' FROM tool_calls WHERE session_id = 'big' AND name = 'Read'")
    assert f"the whole result is stored as tool output sha256:{digest}" in cut[0][0]


async def test_approvals_hold_the_turn_until_a_human_decides(stack: Stack) -> None:
    accepted = await turn(
        stack, "ask", call("Write", file_path="ok.txt", content="approved"), wait=0, approvals=["Write"]
    )
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:

        async def pending() -> list[dict[str, Any]]:
            r = await client.get("/v1/sessions/ask/approvals", params={"status": "pending"})
            return list(r.json()["data"]) if r.status_code == 200 else []

        (waiting,) = await wait_until(pending)
        assert waiting["name"] == "Write" and waiting["input"] == {
            "file_path": "ok.txt",
            "content": "approved",
        }
        bad = await client.post(
            f"/v1/sessions/ask/approvals/{waiting['approval_id']}", json={"decision": "maybe"}
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "decision"
        # A pending approval survives restarts of the workers.
        await stack.stop_role("reactor")
        await stack.stop_role("tools")
        await stack.start("reactor", "tools")
        assert await pending() == [waiting]
        r = await client.post(
            f"/v1/sessions/ask/approvals/{waiting['approval_id']}", json={"decision": "approve"}
        )
        assert r.status_code == 202

        async def finished() -> bool:
            got = await client.get(f"/v1/sessions/ask/turns/{accepted['turn_id']}")
            return bool(got.json()["status"] == "completed")

        await wait_until(finished)
        again = await client.post(
            f"/v1/sessions/ask/approvals/{waiting['approval_id']}", json={"decision": "deny"}
        )
        assert again.status_code == 409
        missing = await client.post("/v1/sessions/ask/approvals/nope", json={"decision": "deny"})
        assert missing.status_code == 404
        # Denied: the model reads why, and the file is never written.
        denied = await turn(stack, "ask", call("Write", file_path="no.txt", content="x"), wait=0)
        (second,) = await wait_until(pending)
        await client.post(
            f"/v1/sessions/ask/approvals/{second['approval_id']}",
            json={"decision": "deny", "reason": "not today"},
        )

        async def denied_done() -> dict[str, Any] | None:
            got = (await client.get(f"/v1/sessions/ask/turns/{denied['turn_id']}")).json()
            return got if got["status"] == "completed" else None

        answer = await wait_until(denied_done)
    assert "(error): the user declined to run this tool: not today" in answer["output_text"]
    workspace = workspace_for(stack.settings.workspace_root, "default", "ask")
    assert (workspace / "ok.txt").read_text() == "approved" and not (workspace / "no.txt").exists()
    statuses = await stack.sql("SELECT status FROM approvals WHERE session_id = 'ask' ORDER BY requested_at")
    assert statuses == [("approved",), ("denied",)]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_bash_runs_in_the_sandboxed_workspace(stack: Stack) -> None:
    await turn(stack, "sh", call("Write", file_path="a.txt", content="one\ntwo\nthree\n"))
    done = await turn(stack, "sh", call("Bash", command="wc -l < a.txt; echo made > b.txt; ls"))
    assert done["status"] == "completed"
    (bash,) = [r for r in await results(stack, "sh") if r[0] == "Bash"]
    assert bash[1].splitlines()[0].strip() == "3" and "b.txt" in bash[1] and not bash[2]
    workspace = workspace_for(stack.settings.workspace_root, "default", "sh")
    assert (workspace / "b.txt").read_text() == "made\n"
    # The sandbox reaches nothing outside: not the host's files, not the network.
    escape = await turn(stack, "sh", call("Bash", command="cat /etc/shadow || touch /usr/pwned"))
    assert escape["status"] == "completed"
    assert not os.path.exists("/usr/pwned")  # noqa: ASYNC240


async def test_a_tool_call_no_executor_answers_is_closed_after_the_deadline(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, tool_deadline_s=1, expiry_check_s=0.2) as stack:
        await stack.start("projector", "reactor", "model")  # no tool executor at all
        await stack.start_api()
        done = await turn(stack, "lost", call("Echo", text="anyone?"))
        assert done["status"] == "completed"
        assert "(error): outcome unknown: no tool executor answered within 1 s" in done["output_text"]
