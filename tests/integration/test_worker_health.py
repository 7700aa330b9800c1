"""Workers answer Kubernetes' probes on their metrics port: /healthz while the event loop turns,
/readyz while running and not stopping (observe/instances.py; deploy/k8s probes them). The
real thing: `agentlog worker ROLE` as its own process, against a real broker and Postgres
(tests/unit/test_probes.py has the answers one by one)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from agentlog import devstack
from eventstore.settings import Settings
from tests.fakes import anthropic as fake
from tests.services import stack_on, wait_until

pytestmark = pytest.mark.services


def _env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLOG_", "ANTHROPIC_"))}
    env.update(
        AGENTLOG_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        AGENTLOG_DATABASE_URL=settings.database_url,
        AGENTLOG_PARTITIONS=str(settings.partitions),
        AGENTLOG_WORKSPACE_ROOT=str(settings.workspace_root),
        AGENTLOG_METRICS_HOST="127.0.0.1",
        AGENTLOG_METRICS_PORT=str(port),
    )
    return env


async def _status(client: httpx.AsyncClient, url: str) -> int | None:
    try:
        return (await client.get(url)).status_code
    except httpx.TransportError:
        return None


@pytest.mark.parametrize("role", ["tools"])
async def test_a_worker_process_answers_healthz_and_readyz(pg_server: str, log_dir: Path, role: str) -> None:
    async with stack_on(pg_server, log_dir) as stack:
        port = devstack.free_port()
        base = f"http://127.0.0.1:{port}"
        with (log_dir / f"health-{role}-{port}.log").open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentlog",
                "worker",
                role,
                env=_env(stack.settings, port),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                async with httpx.AsyncClient(timeout=5) as client:

                    async def ready() -> bool:
                        assert proc.returncode is None, f"the worker exited with {proc.returncode}"
                        return await _status(client, f"{base}/readyz") == 200

                    await wait_until(ready, within=90, interval=0.2)
                    health = await client.get(f"{base}/healthz")
                    assert health.status_code == 200 and health.json() == {"status": "ok"}
                    readiness = await client.get(f"{base}/readyz")
                    assert readiness.json() == {"status": "ready"}
                    metrics = await client.get(f"{base}/metrics")
                    assert metrics.status_code == 200
                    assert f'agentlog_instance_info{{instance_id="{role}-' in metrics.text
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


async def test_model_calls_in_flight_rise_during_a_call_and_fall_after(pg_server: str, log_dir: Path) -> None:
    """KEDA's second input for model workers (deploy/k8s): the calls under way."""
    with fake.FakeAnthropic(latency_s=1.5) as claude:
        async with stack_on(
            pg_server, log_dir, anthropic_api_key="k", anthropic_base_url=claude.base_url
        ) as stack:
            await stack.start("reactor", "model", "projector")
            await stack.start_api()

            def in_flight() -> float:
                worker = stack.workers.get("model")
                if worker is None:
                    return -1.0
                value = worker.metrics.registry.get_sample_value("agentlog_model_calls_in_flight")
                return -1.0 if value is None else float(value)

            async def calling() -> bool:
                return in_flight() == 1

            async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
                posted = await client.post("/v1/sessions/in-flight/messages", json={"content": "hi"})
                assert posted.status_code == 202, posted.text
            await wait_until(calling, within=30)
            rows = await wait_until(
                lambda: stack.sql(
                    "SELECT status FROM turns WHERE session_id = 'in-flight'"
                    " AND status IN ('completed', 'failed')"
                ),
                within=30,
            )
            assert rows == [("completed",)]
            assert in_flight() == 0
