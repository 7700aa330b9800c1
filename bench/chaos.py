"""A shipped checker: `python -m bench.chaos [--minutes N] [--faults kill,stop,pg,broker,proxy]
[--json FILE]` runs `agentlog up --replicas 2` behind a broker proxy, drives a bounded load
through the api (a few sessions posting turns with a Bash append, now and then a sub-agent)
and injects one fault per round: SIGKILL of a random worker, SIGSTOP of one past its group
session timeout, SIGKILL of Postgres, of the broker, a network partition of one worker (the
proxy blackholes or cuts its connections past the session timeout). Each round's turns are
checked as the fault tests check them (`agentlog.testing.checks`); it prints per fault kind the
turns posted, lost, doubled, stuck and failed, and the recovery time (from the fault's end
until a new turn is answered). Not a test; `tests/faults/test_chaos.py` runs it briefly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentlog.devstack import free_port
from agentlog.testing import checks
from agentlog.testing.proxy import BrokerProxy, Mode, partitioned
from agentlog.testing.up import agentlog_up

KINDS = ("kill", "stop", "pg", "broker", "proxy")
SESSIONS = 4  # sessions posting at once in a round
TURNS = 3  # turns each session posts in a round, one after another
PAUSE_S = 14.0  # a pause or a partition: past the groups' 10 s session timeout
SETTLE_S = 120.0  # a round's turns not final by then are stuck


@dataclass
class Round:
    """One fault and what the checks found about the turns posted around it."""

    kind: str
    fault: str
    recovery_s: float | None
    verdict: checks.Verdict
    seconds: float


@dataclass
class Chaos:
    """The stack under test and its proxy."""

    cwd: Path
    stack: dict[str, Any]
    proxy: BrokerProxy
    rng: random.Random
    rounds: list[Round] = field(default_factory=list)
    partitions: int = 0  # partitions so far: they cut and blackhole in turn

    @property
    def database_url(self) -> str:
        return str(self.stack["database_url"])

    def processes(self) -> dict[str, int]:
        procs = json.loads((self.cwd / ".agentlog" / "stack.json").read_text())["processes"]
        return {p["name"]: int(p["pid"]) for p in procs}

    def pid(self, name: str) -> int | None:
        """The pid of process `name` now (a restart changes it)."""
        return self.processes().get(name)

    def worker(self) -> tuple[str, int]:
        """A random worker replica (not the api, not the broker)."""
        name = self.rng.choice(sorted(n for n in self.processes() if n not in ("api", "broker")))
        return name, self.processes()[name]


async def _post(
    client: httpx.AsyncClient, sid: str, key: str, content: str, within: float
) -> dict[str, Any] | None:
    """Post a turn, again with the same key while the api cannot take it (503, a connection
    refused); its answer, or None if it was never acknowledged within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            r = await client.post(
                f"/v1/sessions/{sid}/messages",
                params={"wait": 60},
                json={"content": content},
                headers={"Idempotency-Key": key},
            )
            if r.status_code in (200, 202):
                return dict(r.json())
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    return None


def _client(chaos: Chaos) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {chaos.stack['api_token']}"}
    return httpx.AsyncClient(base_url=chaos.stack["api_url"], headers=headers, timeout=120)


async def load(
    chaos: Chaos, prefix: str, posted: list[tuple[str, str]], sessions: int = SESSIONS, turns: int = TURNS
) -> None:
    """`sessions` sessions posting `turns` turns each; the acknowledged ones go to `posted`."""

    async def session(sid: str) -> None:
        async with _client(chaos) as client:
            for n in range(turns):
                key = f"{sid}-{n}"
                if await _post(client, sid, key, checks.turn_content(sid, n, n % 2 == 1), SETTLE_S):
                    posted.append((sid, key))

    await asyncio.gather(*(session(f"{prefix}{i}") for i in range(sessions)))


async def recovered(chaos: Chaos, sid: str, within: float = SETTLE_S) -> float | None:
    """Seconds until a new turn (no tools) is answered completed, or None."""
    started = time.monotonic()
    async with _client(chaos) as client:
        while time.monotonic() - started < within:
            answer = await _post(client, sid, sid, "hello", within)
            if answer and answer.get("status") == "completed":
                return time.monotonic() - started
            await asyncio.sleep(0.2)
    return None


def _kill(chaos: Chaos) -> str:
    name, pid = chaos.worker()
    os.kill(pid, signal.SIGKILL)
    return f"SIGKILL {name}"


async def _stop(chaos: Chaos) -> str:
    name, pid = chaos.worker()
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(PAUSE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    return f"SIGSTOP {name} {PAUSE_S:.0f}s"


def _pg(chaos: Chaos) -> str:
    pid = int((chaos.cwd / ".agentlog" / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    return "SIGKILL postgres"


def _broker(chaos: Chaos) -> str:
    os.kill(chaos.processes()["broker"], signal.SIGKILL)
    return "SIGKILL broker"


async def _partition(chaos: Chaos) -> str:
    name, pid = chaos.worker()
    mode: Mode = ("cut", "blackhole")[chaos.partitions % 2]
    chaos.partitions += 1
    sent_before, _ = chaos.proxy.traffic(pid)
    with partitioned(chaos.proxy, lambda: chaos.pid(name), mode) as connections:
        await asyncio.sleep(PAUSE_S)
    return f"{mode} {name} {PAUSE_S:.0f}s ({connections} connections, {sent_before} bytes sent before)"


def _as_async(fault: Callable[[Chaos], str]) -> Callable[[Chaos], Awaitable[str]]:
    async def run(chaos: Chaos) -> str:
        return fault(chaos)

    return run


FAULTS: dict[str, Callable[[Chaos], Awaitable[str]]] = {
    "kill": _as_async(_kill),
    "stop": _stop,
    "pg": _as_async(_pg),
    "broker": _as_async(_broker),
    "proxy": _partition,
}


async def one_round(chaos: Chaos, kind: str, n: int) -> Round:
    """Load, the fault two seconds in (turns in flight), recovery measured, turns checked."""
    started = time.monotonic()
    prefix = f"{kind}{n}-"
    posted: list[tuple[str, str]] = []
    loading = asyncio.create_task(load(chaos, prefix, posted))
    await asyncio.sleep(2)
    fault = await FAULTS[kind](chaos)
    recovery = await recovered(chaos, f"probe-{kind}{n}")
    await loading
    deadline = time.monotonic() + SETTLE_S
    while not checks.ended(chaos.database_url, prefix, len(posted)) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling SQL
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # the projector's last batch
    workspaces = chaos.cwd / ".agentlog" / "workspaces"
    verdict = checks.check(chaos.database_url, workspaces, prefix, posted)
    return Round(kind, fault, recovery, verdict, time.monotonic() - started)


async def run(chaos: Chaos, kinds: list[str], seconds: float) -> None:
    """Rounds of each kind in turn until `seconds` have passed (at least one round each)."""
    deadline = time.monotonic() + seconds
    n = 0
    while n < len(kinds) or time.monotonic() < deadline:
        kind = kinds[n % len(kinds)]
        done = await one_round(chaos, kind, n)
        chaos.rounds.append(done)
        v = done.verdict
        print(
            f"round {n:>2} {kind:<6} {done.fault:<60} posted {v.posted} lost {len(v.lost)} doubled"
            f" {len(v.doubled)} stuck {len(v.stuck)} failed {len(v.failed)} recovery {_s(done.recovery_s)}",
            flush=True,
        )
        n += 1


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s"


def summary(rounds: list[Round]) -> dict[str, dict[str, Any]]:
    """Per fault kind: rounds, turns posted, lost, doubled, stuck, failed, recovery times."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(r.kind for r in rounds):
        mine = [r for r in rounds if r.kind == kind]
        times = [r.recovery_s for r in mine if r.recovery_s is not None]
        out[kind] = {
            "rounds": len(mine),
            "posted": sum(r.verdict.posted for r in mine),
            **{
                what: sum(len(getattr(r.verdict, what)) for r in mine)
                for what in ("lost", "doubled", "stuck", "failed", "unanswered")
            },
            "recovery_p50_s": statistics.median(times) if times else None,
            "recovery_max_s": max(times) if times else None,
            "never_recovered": len(mine) - len(times),
        }
    return out


def report(rounds: list[Round], traffic: tuple[int, int]) -> str:
    """The table per fault kind, and every problem found, by name."""
    lines = [
        f"{'fault':<8}{'rounds':>7}{'posted':>8}{'lost':>6}{'doubled':>9}{'stuck':>7}{'failed':>8}"
        f"{'unanswered':>12}{'recovery p50':>14}{'max':>8}"
    ]
    for kind, s in summary(rounds).items():
        lines.append(
            f"{kind:<8}{s['rounds']:>7}{s['posted']:>8}{s['lost']:>6}{s['doubled']:>9}{s['stuck']:>7}"
            f"{s['failed']:>8}{s['unanswered']:>12}{_s(s['recovery_p50_s']):>14}{_s(s['recovery_max_s']):>8}"
        )
    for r in rounds:
        for what in ("lost", "doubled", "stuck", "failed", "unanswered"):
            for item in getattr(r.verdict, what):
                lines.append(f"  {r.kind} ({r.fault}): {what} {item}")
    lines.append(
        f"through the broker proxy: {traffic[0]} bytes sent, {traffic[1]} received (open connections)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to inject faults (rounds)")
    parser.add_argument("--faults", default=",".join(KINDS), help=f"fault kinds, of {','.join(KINDS)}")
    parser.add_argument("--json", type=Path, help="write every round and the summary to this file")
    parser.add_argument("--seed", type=int, default=None, help="the random choice of victims")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown fault kinds {sorted(unknown)}; choose among {','.join(KINDS)}")
    proxy_port, broker_port = free_port(), free_port()
    env = {
        "AGENTLOG_OFFLINE_MODEL_LATENCY_MS": "300",  # calls in flight when a fault strikes
        "AGENTLOG_SUBAGENT_TIMEOUT_S": "120",
        "AGENTLOG_UP_BROKER_PORT": str(broker_port),
        "AGENTLOG_UP_BROKER_ADVERTISED_PORT": str(proxy_port),
    }
    args_up = ("--partitions", "4", "--replicas", "2")
    tmp = tempfile.mkdtemp(prefix="agentlog-chaos-")
    os.chmod(tmp, 0o755)  # the sandbox user reaches the workspaces
    with BrokerProxy(proxy_port, broker_port) as proxy:
        with agentlog_up(Path(tmp), *args_up, env=env, within=300, grace=60) as (_, stack):
            print(f"agentlog up --replicas 2 in {tmp}; the broker behind 127.0.0.1:{proxy_port}", flush=True)
            chaos = Chaos(Path(tmp), stack, proxy, random.Random(args.seed))
            asyncio.run(run(chaos, kinds, args.minutes * 60))
            traffic = proxy.traffic()
    # A round after which no new turn was answered within SETTLE_S is a problem too (liveness).
    clean = all(r.verdict.clean() and r.recovery_s is not None for r in chaos.rounds)
    if clean:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"problems found: the stack's data, logs and workspaces are kept in {tmp}")
    print(report(chaos.rounds, traffic))
    if args.json:
        rounds = [asdict(r) for r in chaos.rounds]
        args.json.write_text(json.dumps({"summary": summary(chaos.rounds), "rounds": rounds}, indent=2))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
