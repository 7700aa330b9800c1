"""The fleet through real parts: every process registers and exports metrics; `agentlog top`
finds them all, and flags the one model worker whose upstream fails while the fleet's
average looks acceptable (the source's J.6 example)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlog import top
from eventstore import store
from eventstore.log import partition_for
from eventstore.models import CLAUDE_DEFAULT
from observe import instances
from tests.fakes import anthropic as fake
from tests.services import Stack, stack_on, wait_until

MODEL = CLAUDE_DEFAULT
WORKERS = 3


@pytest.fixture
async def fleet(pg_server: str, log_dir: Path) -> AsyncIterator[tuple[Stack, list[fake.FakeAnthropic]]]:
    servers = [fake.FakeAnthropic() for _ in range(WORKERS)]
    for server in servers:
        server.__enter__()
    calls = itertools.count()
    lock = threading.Lock()

    def flaky(request: dict[str, Any]) -> fake.Reply:
        with lock:
            n = next(calls)
        return fake.server_error() if n % 3 == 0 else fake.text("ok")

    servers[-1].default = flaky  # the bad pod: a third of its calls fail
    try:
        async with stack_on(
            pg_server, log_dir, anthropic_api_key="k", model_max_attempts=1, heartbeat_s=0.5
        ) as stack:
            await stack.start("reactor", "projector")
            for i, server in enumerate(servers):
                await stack.start(
                    "model",
                    name=f"model-{i}",
                    instance=f"model-{i}",
                    consumer_groups=True,  # the three share the partitions
                    anthropic_base_url=server.base_url,
                )
            await stack.start_api()

            async def shared() -> bool:  # the group settled: each replica owns partitions
                workers = [stack.workers.get(f"model-{i}") for i in range(WORKERS)]
                return all(w is not None and w.owned and w.caught_up for w in workers)

            await wait_until(shared, within=60)
            yield stack, servers
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def _spread(stack: Stack, sessions: int) -> list[str]:
    """Session ids with as many on each model worker's partitions (the group's assignment need
    not give each replica as many sessions: the bad one must not carry most of the fleet)."""
    owner = {p: i for i in range(WORKERS) for p in stack.workers[f"model-{i}"].owned}
    per: dict[int, list[str]] = {i: [] for i in range(WORKERS)}
    for n in itertools.count():
        sid = f"fleet{n}"
        mine = per[owner[partition_for(sid, stack.settings.partitions)]]
        if len(mine) < sessions // WORKERS:
            mine.append(sid)
        if sum(map(len, per.values())) == sessions:
            return [sid for ids in per.values() for sid in ids]
    raise AssertionError("unreachable")


async def test_top_shows_every_process_and_flags_the_bad_model_worker(
    fleet: tuple[Stack, list[fake.FakeAnthropic]],
) -> None:
    stack, _ = fleet
    sessions = 36
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        for sid in _spread(stack, sessions):
            r = await client.post(f"/v1/sessions/{sid}/messages", json={"content": "hi", "model": MODEL})
            assert r.status_code == 202, r.text

    async def all_ended() -> bool:
        rows = await stack.sql("SELECT count(*) FROM turns WHERE status IN ('completed', 'failed')")
        return bool(rows[0][0] == sessions)

    # A rebalance of the three replicas' group under a loaded CI machine can hold a partition
    # for a while (the embedded broker's rejoins); every turn still ends.
    await wait_until(all_ended, within=120)
    snap = await wait_until(lambda: _reactor_counted(stack, sessions), within=20)

    roles = {row.role for row in snap.instances}
    assert {"reactor", "projector", "model", "api"} <= roles
    models = {row.instance_id: row for row in snap.instances if row.role == "model"}
    assert set(models) == {f"model-{i}" for i in range(WORKERS)}
    assert sum(row.work for row in models.values()) == sessions  # one call per turn
    bad = models[f"model-{WORKERS - 1}"]
    assert bad.errors > 0 and bad.work >= 5, bad
    assert [row.instance_id for row in snap.instances if row.flags] == [bad.instance_id]
    assert any(f.startswith("error rate") for f in bad.flags)
    # The fleet's average hides it: its error rate is a fraction of the bad pod's.
    fleet_rate = snap.roles["model"].error_rate
    assert fleet_rate is not None and bad.error_rate is not None
    assert fleet_rate < bad.error_rate / 2
    # The reactor saw every turn end, the failed ones too.
    reactor = next(row for row in snap.instances if row.role == "reactor")
    assert reactor.work == sessions and reactor.errors == bad.errors
    assert snap.fleet.tokens_in > 0 and snap.fleet.cost_usd > 0
    # Every process exports its own series; a method the client chose is not a label value
    # (the HTTP parser, httptools, refuses made-up ones with 400; WebDAV's reach the app).
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        assert (await client.request("FOO1", "/v1/sessions")).status_code in (400, 404, 405)
        assert (await client.request("PROPFIND", "/v1/sessions")).status_code in (404, 405)
    async with await store.connect(stack.settings.database_url) as conn:
        urls = {i.role: i.metrics_url for i in await instances.live(conn, 30)}
    async with httpx.AsyncClient() as client:
        projector = (await client.get(urls["projector"] or "")).text
        api = (await client.get(urls["api"] or "")).text
        reactor = (await client.get(urls["reactor"] or "")).text
    assert _value(projector, "agentlog_events_projected_total") > sessions
    assert "agentlog_projection_lag_seconds " in projector
    assert 'agentlog_consumer_lag_records{consumer="projector",partition="0"}' in projector
    assert 'method="_OTHER"' in api and "FOO1" not in api and "PROPFIND" not in api
    assert _value(reactor, "agentlog_turn_steps_count") == sessions
    assert snap.as_json()["outliers"] == [
        {"instance_id": bad.instance_id, "role": "model", "flags": bad.flags}
    ]
    # The api serves the same view to the console (GET /v1/fleet).
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        served = (await client.get("/v1/fleet")).json()
    assert [(o["instance_id"], o["role"]) for o in served["outliers"]] == [(bad.instance_id, "model")]
    assert served["roles"]["model"]["work"] >= sessions


def _value(text: str, series: str) -> float:
    """A series' value in Prometheus text (its first sample)."""
    for line in text.splitlines():
        if line.startswith(series + " ") or line.startswith(series + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} is not exported")


async def _reactor_counted(stack: Stack, sessions: int) -> top.Snapshot | None:
    snap = await top.snapshot(stack.settings.database_url)
    reactor = [row for row in snap.instances if row.role == "reactor"]
    return snap if reactor and reactor[0].work == sessions else None


async def test_a_stopped_instance_leaves_the_registry(fleet: tuple[Stack, list[fake.FakeAnthropic]]) -> None:
    stack, _ = fleet
    async with await store.connect(stack.settings.database_url) as conn:

        async def registered() -> set[str]:
            return {i.instance_id for i in await instances.live(conn, 30)}

        async def all_in() -> bool:
            return {f"model-{i}" for i in range(WORKERS)} <= await registered()

        await wait_until(all_in, within=30)
        await stack.stop_role("model-0")
        assert "model-0" not in await registered()
        assert "model-1" in await registered()
