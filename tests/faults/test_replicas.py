"""Two replicas of every worker role in their consumer groups, as `agentlog up --replicas 2`
runs them (real processes, the embedded broker's real groups): one replica of each role
SIGKILLed in turn under load, one paused past its session timeout and resumed. Every posted
turn completes exactly once, no step is answered twice, every tool call is answered once, a
Bash append runs once per answer, and sub-agents whose parent and child live on different
replicas report back (issue 13; invariants 2, 3, 9 and 10).

One stack for the module: a group's first join costs ~5 s on the embedded broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agentlog.devstack import free_port
from agentlog.testing import checks
from agentlog.testing.up import agentlog_up

ROLES = ("reactor", "model-worker", "tool-worker", "subagent-worker", "projector")
SESSIONS = 8


@dataclass
class Up:
    """`agentlog up --replicas 2` in a directory of its own."""

    cwd: Path
    proc: subprocess.Popen[bytes]
    stack: dict[str, Any]
    posted: dict[str, list[str]] = field(default_factory=dict)  # session -> idempotency keys

    def pid(self, name: str) -> int:
        procs = json.loads((self.cwd / ".agentlog" / "stack.json").read_text())["processes"]
        return int(next(p["pid"] for p in procs if p["name"] == name))

    def log(self, name: str) -> str:
        return (self.cwd / ".agentlog" / "logs" / f"{name}.log").read_text(errors="replace")

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.stack["database_url"], autocommit=True) as conn:
            return list(conn.execute(query).fetchall())


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: the Bash tool cannot run")
    cwd = tmp_path_factory.mktemp("replicas")
    # Calls take a while, so that a kill or a pause finds some in flight.
    env = {"AGENTLOG_OFFLINE_MODEL_LATENCY_MS": "300", "AGENTLOG_SUBAGENT_TIMEOUT_S": "120"}
    port = free_port()  # `--port`: the api where the user asked for it
    args = ("--partitions", "4", "--replicas", "2", "--port", str(port))
    with agentlog_up(cwd, *args, env=env, grace=90) as (proc, stack):
        assert stack["api_url"] == f"http://127.0.0.1:{port}"
        yield Up(cwd, proc, stack)


async def _load(up: Up, prefix: str, turns: int, stop_after: asyncio.Event) -> None:
    """SESSIONS sessions posting turns one after another until `turns` each are posted."""
    token = up.stack["api_token"]

    async def session(sid: str) -> None:
        async with httpx.AsyncClient(
            base_url=up.stack["api_url"], headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            for n in range(turns):
                key = f"{sid}-{n}"
                up.posted.setdefault(sid, []).append(key)
                for _ in range(60):  # the api is not killed; a retry keeps the key
                    r = await client.post(
                        f"/v1/sessions/{sid}/messages",
                        params={"wait": 60},
                        json={"content": checks.turn_content(sid, n, subagent=n % 2 == 0)},
                        headers={"Idempotency-Key": key},
                    )
                    if r.status_code in (200, 202):
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise AssertionError(f"{key}: {r.status_code} {r.text}")

    await asyncio.gather(*(session(f"{prefix}{i}") for i in range(SESSIONS)))
    stop_after.set()


async def _calling(up: Up, instance: str, within: float = 30) -> None:
    """Wait until the replica has a model call in flight (its own metrics say so)."""
    (url,) = up.sql(f"SELECT metrics_url FROM instances WHERE instance_id = '{instance}'")[0]
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            text = (await client.get(url)).text
            if any(
                line.startswith("agentlog_model_calls_in_flight") and float(line.split()[-1]) > 0
                for line in text.splitlines()
            ):
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"{instance} made no model call in {within} s")


async def _settle(up: Up, prefix: str, within: float = 120) -> None:
    deadline = time.monotonic() + within
    posted = sum(len(keys) for sid, keys in up.posted.items() if sid.startswith(prefix))
    while not checks.ended(up.stack["database_url"], prefix, posted):
        assert time.monotonic() < deadline, up.sql(
            f"SELECT session_id, turn_id, status FROM turns WHERE session_id LIKE '{prefix}%'"
            " AND status NOT IN ('completed', 'failed')"
        )
        await asyncio.sleep(0.5)


def _check(up: Up, prefix: str) -> None:
    """Exactly once, in SQL and on disk (`agentlog.testing.checks`); every turn completed and
    every tool call answered without error."""
    posted = [(sid, key) for sid, keys in up.posted.items() if sid.startswith(prefix) for key in keys]
    verdict = checks.check(up.stack["database_url"], up.cwd / ".agentlog" / "workspaces", prefix, posted)
    assert verdict.clean() and not verdict.failed, verdict
    calls = up.sql(f"SELECT name, status, is_error FROM tool_calls WHERE session_id LIKE '{prefix}%'")
    assert calls and {(status, err) for _, status, err in calls} == {("ok", False)}, calls


async def test_killing_one_replica_of_each_role_in_turn_loses_and_doubles_nothing(up: Up) -> None:
    done = asyncio.Event()
    load = asyncio.create_task(_load(up, "kill", 4, done))
    for name in ROLES:
        await asyncio.sleep(2)
        os.kill(up.pid(f"{name}-1"), signal.SIGKILL)
    await load
    await _settle(up, "kill")
    _check(up, "kill")
    out = (up.cwd / "up.out").read_text()
    assert all(f"{name}-1 restarted" in out for name in ROLES), out
    # The children ran on either replica of the sub-agent worker's partitions.
    assert (
        up.sql("SELECT count(DISTINCT parent_session_id) FROM sessions WHERE parent_session_id LIKE 'kill%'")[
            0
        ][0]
        == SESSIONS
    )


async def test_a_replica_paused_past_its_session_timeout_is_fenced_and_nothing_doubles(up: Up) -> None:
    paused = up.pid("model-worker-2")
    done = asyncio.Event()
    load = asyncio.create_task(_load(up, "stop", 3, done))
    before = len(up.log("model-worker-2"))
    await _calling(up, "model-worker-2")  # pause it in the middle of a model call
    os.kill(paused, signal.SIGSTOP)
    try:
        # The other replica takes its partitions once the session timeout (10 s) has passed.
        await asyncio.sleep(14)
    finally:
        os.kill(paused, signal.SIGCONT)
    await load
    await _settle(up, "stop")
    _check(up, "stop")
    # Resumed, its late writes were refused: its lease on the calls it was making had run out
    # and another replica held it (or the fence refused an offset or a ledger row); it stopped
    # and was restarted.
    after = up.log("model-worker-2")[before:]
    assert any(word in after for word in ("refused", "is owned by", "was lost")), after
    assert "model-worker-2 restarted" in (up.cwd / "up.out").read_text()


async def test_replicas_leaving_and_joining_again_and_again_under_load_answer_every_turn(up: Up) -> None:
    """Kafka's bounce test: replicas stop cleanly (SIGTERM: they hand their partitions over)
    and `up` starts them again, round after round, while turns are posted."""
    done = asyncio.Event()
    load = asyncio.create_task(_load(up, "bounce", 3, done))
    out = up.cwd / "up.out"
    for _ in range(3):
        await asyncio.sleep(1.5)
        restarts = out.read_text().count("restarted")
        for name in ("reactor-2", "model-worker-1", "tool-worker-2", "subagent-worker-1"):
            os.kill(up.pid(name), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while out.read_text().count("restarted") < restarts + 4:  # back, and joining again
            assert time.monotonic() < deadline, out.read_text()
            await asyncio.sleep(0.2)
    await load
    await _settle(up, "bounce")
    _check(up, "bounce")
