"""The workload bench.compare runs through each system, and what one run of it measured.

N sessions at once, each posting M user turns one after another (a turn starts when the
previous one of its session ended); a turn's latency is from its start to its answer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.measure import concurrently, pct
from bench.procstat import STATS_LAG_S, Watched, cpu_seconds, rss_mb, spent, total, transactions

# One turn of a session: (session id, turn number) -> done once the turn's answer is durable.
Turn = Callable[[str, int], Awaitable[None]]


@dataclass(frozen=True)
class Workload:
    """How much to run, and how slow the model is."""

    sessions: int = 100
    turns: int = 5
    tools: bool = False  # each turn: model -> Echo -> model
    latency_ms: int = 0

    @property
    def model_s(self) -> float:
        """The model's time per turn: one call, or two with a tool between them."""
        return self.latency_ms / 1000 * (2 if self.tools else 1)

    def content(self, session_id: str, n: int) -> str:
        """The user's message: a tool turn asks the offline model to call Echo."""
        if self.tools:
            return f'call Echo {{"text": "{session_id} turn {n}"}}'
        return f"hello {n} from {session_id}"


@dataclass
class Run:
    """One system's run of a workload."""

    system: str
    workload: Workload
    wall_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process while it ran
    rss_mb: dict[str, tuple[float, float]] = field(default_factory=dict)  # after it: now, peak
    retries: int = 0  # requests answered "busy, retry" (503) and sent again
    transactions: int = 0  # Postgres transactions in the system's database while it ran
    cpu_total_s: float = math.nan  # the system's CPU seconds (cpu_s may show some twice)

    @property
    def turns(self) -> int:
        return len(self.latencies_s)

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.wall_s

    def latency_ms(self, q: float) -> float:
        return pct(self.latencies_s, q) * 1000

    @property
    def cpu_per_turn_ms(self) -> float:
        return self.cpu_total_s / self.turns * 1000

    @property
    def transactions_per_turn(self) -> float:
        return self.transactions / self.turns


async def drive(turn: Turn, sessions: int, turns: int, prefix: str) -> tuple[float, list[float]]:
    """Run `sessions` sessions at once, `turns` turns each in order; wall seconds and every
    turn's latency."""
    return await concurrently(sessions, turns, lambda s, n: turn(f"{prefix}{s}", n))


async def measured(
    system: str, turn: Turn, work: Workload, watched: list[Watched], database_url: str, prefix: str
) -> Run:
    """The workload driven once, with the CPU its processes used meanwhile, their memory after
    it and the Postgres transactions of the system's database."""
    xacts = transactions(database_url)
    before = cpu_seconds(watched)
    wall, latencies = await drive(turn, work.sessions, work.turns, prefix)
    used = spent(before, cpu_seconds(watched))
    await asyncio.sleep(STATS_LAG_S)
    xacts = transactions(database_url) - xacts
    cpu = total(watched, used)
    return Run(system, work, wall, latencies, used, rss_mb(watched), transactions=xacts, cpu_total_s=cpu)
