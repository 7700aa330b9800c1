"""The probes a process answers on its metrics port (observe/instances.py): /healthz from the
event loop's ticks, /readyz from the readiness the caller gives, the metrics beside them."""

from __future__ import annotations

import time

import httpx

from eventstore.settings import Settings
from observe import instances
from observe.metrics import Metrics


async def test_readyz_follows_the_readiness_and_healthz_the_event_loop() -> None:
    settings = Settings(
        metrics_host="127.0.0.1", metrics_port=0, database_url="postgresql://nobody@127.0.0.1:1/x"
    )
    ready = False
    async with instances.presence(settings, Metrics("probe", "probe"), lambda: ready) as url:
        assert url is not None
        base = url.removesuffix("/metrics")
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{base}/healthz")).status_code == 200
            not_ready = await client.get(f"{base}/readyz")
            assert not_ready.status_code == 503 and not_ready.json() == {"status": "not ready"}
            ready = True
            assert (await client.get(f"{base}/readyz")).status_code == 200
            assert "agentlog_instance_info" in (await client.get(url)).text


def test_a_stalled_event_loop_is_neither_alive_nor_ready() -> None:
    health = instances.Health(lambda: True, stall_s=0.05)
    assert health.alive() and health.ready()
    time.sleep(0.1)  # no tick meanwhile: the loop that should tick is stuck
    assert not health.alive() and not health.ready()
    health.tick()
    assert health.alive() and health.ready()

    def broken() -> bool:
        raise RuntimeError("readiness check fails")

    assert not instances.Health(broken).ready()


def test_probes_answer_over_http_when_the_loop_stalls() -> None:
    health = instances.Health(stall_s=0.05)
    url, stop = instances.serve_metrics(Metrics("probe", "probe"), "127.0.0.1", 0, health)
    try:
        base = url.removesuffix("/metrics")
        time.sleep(0.1)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 503
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        stop()
