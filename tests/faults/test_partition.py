"""A network partition between one replica and the broker, longer than the group session timeout
(issue 17): `agentlog up --replicas model=2` with the broker behind a loopback proxy
(`agentlog.testing.proxy`; the broker advertises the proxy's port, so every connection runs
through it, which the proxy's byte counts show). The partitioned replica's partitions are
claimed by the other at a higher generation, its late writes are refused, nothing is answered
twice and every posted turn finishes (invariants 2, 3 and 10). The module's stack also runs a
round of `bench.chaos`, so the shipped checker cannot rot.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentlog.devstack import free_port
from agentlog.testing import checks
from agentlog.testing.proxy import BrokerProxy, Mode, partitioned
from agentlog.testing.up import agentlog_up
from bench import chaos

PAUSE_S = 14  # past the groups' session timeout (10 s under `agentlog up`)


@dataclass
class Up:
    cwd: Path
    stack: dict[str, Any]
    proxy: BrokerProxy

    def pid(self, name: str) -> int:
        procs = json.loads((self.cwd / ".agentlog" / "stack.json").read_text())["processes"]
        return int(next(p["pid"] for p in procs if p["name"] == name))

    def owners(self, consumer: str) -> dict[int, tuple[str, int]]:
        rows = checks.sql(
            self.stack["database_url"],
            "SELECT log_partition, owner, generation FROM partition_owners WHERE consumer = %s",
            consumer,
        )
        return {int(p): (str(owner), int(gen)) for p, owner, gen in rows}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: the Bash tool cannot run")
    cwd = tmp_path_factory.mktemp("partition")
    cwd.chmod(0o755)
    proxy_port, broker_port = free_port(), free_port()
    env = {
        "AGENTLOG_OFFLINE_MODEL_LATENCY_MS": "300",
        "AGENTLOG_UP_BROKER_PORT": str(broker_port),
        "AGENTLOG_UP_BROKER_ADVERTISED_PORT": str(proxy_port),
    }
    args = ("--partitions", "4", "--replicas", "model=2")
    with (
        BrokerProxy(proxy_port, broker_port) as proxy,
        agentlog_up(cwd, *args, env=env, grace=60) as (_, stack),
    ):
        assert stack["kafka_bootstrap"] == f"127.0.0.1:{proxy_port}"
        yield Up(cwd, stack, proxy)


async def _load(up: Up, prefix: str) -> list[tuple[str, str]]:
    """Four sessions posting three turns with a Bash append each; the acknowledged ones."""
    posted: list[tuple[str, str]] = []
    await chaos.load(chaos.Chaos(up.cwd, up.stack, up.proxy, random.Random(0)), prefix, posted, 4, 3)
    return posted


async def _settled(up: Up, prefix: str, posted: list[tuple[str, str]]) -> checks.Verdict:
    workspaces = up.cwd / ".agentlog" / "workspaces"
    deadline = time.monotonic() + 90
    while not checks.ended(up.stack["database_url"], prefix, len(posted)):
        assert time.monotonic() < deadline, checks.check(up.stack["database_url"], workspaces, prefix, posted)
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # the projector's last batch
    return checks.check(up.stack["database_url"], workspaces, prefix, posted)


async def _partition(up: Up, role: str, mode: Mode, prefix: str) -> None:
    """Partition `role`-2 under load past the session timeout; its partitions move to
    `role`-1 at a higher generation; every turn finishes exactly once."""
    consumer = {"model": "model-worker", "reactor": "reactor"}[role]  # a role with two replicas
    victim = up.pid(f"{consumer}-2")
    loading = asyncio.create_task(_load(up, prefix))
    deadline = time.monotonic() + 30
    while not (held := {p for p, (o, _) in up.owners(consumer).items() if o == f"{consumer}-2"}):
        assert time.monotonic() < deadline, up.owners(consumer)
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # turns in flight
    sent, received = up.proxy.traffic(victim)
    assert sent > 0 and received > 0, "the replica's traffic does not run through the proxy"
    before = up.owners(consumer)
    with partitioned(up.proxy, lambda: up.pid(f"{consumer}-2"), mode) as connections:
        cut_at = time.monotonic()
        assert connections > 0
        while any(up.owners(consumer)[p][0] != f"{consumer}-1" for p in held):
            assert time.monotonic() < cut_at + PAUSE_S + 10, up.owners(consumer)
            await asyncio.sleep(0.2)
        after = up.owners(consumer)
        await asyncio.sleep(max(0.0, cut_at + PAUSE_S - time.monotonic()))
    # Taken over by the other replica at a higher generation: the fence on its late writes.
    assert all(after[p][1] > before[p][1] for p in held), (before, after)
    posted = await loading
    verdict = await _settled(up, prefix, posted)
    assert verdict.clean() and not verdict.failed, verdict
    assert verdict.posted == 12


async def test_a_model_worker_blackholed_past_its_session_timeout_is_fenced(up: Up) -> None:
    await _partition(up, "model", "blackhole", "hole")


async def test_a_round_of_the_chaos_checker(up: Up) -> None:
    """`bench.chaos` against this stack: a random worker cut off (its connections closed, new
    ones refused) past the session timeout; every turn is answered once, the report says so."""
    c = chaos.Chaos(up.cwd, up.stack, up.proxy, random.Random(1))
    done = await chaos.one_round(c, "proxy", 0)
    assert done.fault.startswith("cut ") and " 0 connections" not in done.fault, done.fault
    assert done.verdict.clean() and done.verdict.posted == chaos.SESSIONS * chaos.TURNS, done.verdict
    assert done.recovery_s is not None
    text = chaos.report([done], up.proxy.traffic())
    assert text.splitlines()[1].split()[:6] == ["proxy", "1", str(done.verdict.posted), "0", "0", "0"], text
    with pytest.raises(SystemExit):
        chaos.main(["--faults", "kill,flood"])
