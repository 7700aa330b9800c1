"""Schemathesis over the served OpenAPI schema, with a token and without one: no server
error, and every response (status, content type, body) as the schema documents it; after
the fuzzing, nothing was dead-lettered, every worker still runs and a run still answers."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.services import Stack, stack_on

TOKEN = "tok-schemathesis"
# `no_server_error` (schemathesis_hooks.py) is not_a_server_error knowing the runs' deadlines.
CHECKS = "no_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
# A stream never ends by itself; it is tested on its own (test_api_v1).
STREAM = "/events/stream$"

pytestmark = pytest.mark.skipif(
    shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None,
    reason="schemathesis is not installed (pip install -e '.[test]')",
)


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, auth_required=True, api_tokens=f"{TOKEN}:acme") as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


async def _schemathesis(stack: Stack, log_dir: Path, *headers: str) -> tuple[int, str]:
    args = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{stack.api_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "8",
        "--seed",
        "7",
        "--request-timeout",
        "20",
        "--generation-database",
        ":memory:",
        "--phases",
        "examples,coverage,fuzzing",
        "--exclude-path-regex",
        STREAM,
        *(part for header in headers for part in ("--header", header)),
    ]
    report = log_dir / f"schemathesis-{len(headers)}.txt"
    with open(report, "wb") as out:  # noqa: ASYNC230 (a local file, opened once)
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=log_dir,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        )
        try:
            await asyncio.wait_for(proc.wait(), 240)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return 1, f"schemathesis did not finish in 240 s:\n{report.read_text(errors='replace')[-6000:]}"
    return proc.returncode or 0, report.read_text(errors="replace")


async def _still_serving(stack: Stack) -> None:
    """What the fuzzing must not have broken: the projection took every event, every worker
    runs, and a run answers."""
    assert await stack.sql("SELECT consumer, reason FROM dead_letters") == []
    stopped = {name: task for name, (task, _) in stack.tasks.items() if task.done()}
    assert not stopped, {name: task.exception() for name, task in stopped.items()}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.api_url or "", headers=headers, timeout=40) as client:
        r = await client.post("/v1/agent/run", json={"prompt": "still there?", "timeout_s": 30})
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text


@pytest.mark.timeout(400)
async def test_schemathesis_finds_nothing_with_a_token(stack: Stack, log_dir: Path) -> None:
    code, report = await _schemathesis(stack, log_dir, f"Authorization: Bearer {TOKEN}")
    assert code == 0, report[-6000:]
    await _still_serving(stack)


@pytest.mark.timeout(400)
async def test_schemathesis_finds_nothing_without_a_token(stack: Stack, log_dir: Path) -> None:
    code, report = await _schemathesis(stack, log_dir)
    assert code == 0, report[-6000:]
    await _still_serving(stack)
