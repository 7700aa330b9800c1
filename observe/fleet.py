"""The fleet as `agentlog top` and the console (`GET /v1/fleet`) show it: every registered
instance's metrics side by side with the fleet's, and the instances that stand out from
their peers (an average hides the one bad pod).

Instances are found in the `instances` table (each process registers and heartbeats);
each one's /metrics is scraped; values are totals since the instance started.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from eventstore import store
from observe import instances
from observe.outliers import Rule, outliers

# What counts as an instance's work, its errors and its duration, by the metrics it has
# (else http requests for the api, events projected for the projector). The fleet's work
# sums unlike things; its error rate and duration are most telling per role.
WORK = (
    # (metric family, label, error values, duration histogram)
    ("agentlog_turns", "outcome", {"failed"}, "agentlog_turn_duration_seconds"),
    ("agentlog_model_calls", "outcome", {"error"}, "agentlog_model_call_duration_seconds"),
    ("agentlog_tool_calls", "outcome", {"error"}, "agentlog_tool_call_duration_seconds"),
)


@dataclass
class Stats:
    """One instance's (or the fleet's) figures."""

    instance_id: str
    role: str
    up: bool = True
    work: float = 0.0  # turns, model calls, tool calls or http requests
    errors: float = 0.0
    duration_sum: float = 0.0
    duration_count: float = 0.0
    steps_sum: float = 0.0
    steps_count: float = 0.0
    tokens_in: float = 0.0
    tokens_out: float = 0.0
    tokens_cache_read: float = 0.0
    tokens_cache_write: float = 0.0
    cost_usd: float = 0.0
    lag: float = 0.0
    dead_letters: float = 0.0
    flags: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.work if self.work else None

    @property
    def mean_duration_s(self) -> float | None:
        return self.duration_sum / self.duration_count if self.duration_count else None

    @property
    def steps_per_turn(self) -> float | None:
        return self.steps_sum / self.steps_count if self.steps_count else None

    def as_json(self) -> dict[str, Any]:
        """The figures, derived ones included."""
        return {
            **asdict(self),
            "error_rate": self.error_rate,
            "mean_duration_s": self.mean_duration_s,
            "steps_per_turn": self.steps_per_turn,
        }


def parse(instance_id: str, role: str, text: str) -> Stats:
    """An instance's Stats from its Prometheus text."""
    stats = Stats(instance_id, role)
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            samples[sample.name].append((sample.labels, sample.value))

    def total(name: str, **match: str) -> float:
        return sum(
            v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items())
        )

    for family, label, bad, histogram in WORK:
        count = total(f"{family}_total")
        if count:
            stats.work = count
            stats.errors = sum(v for labels, v in samples[f"{family}_total"] if labels.get(label) in bad)
            stats.duration_sum = total(f"{histogram}_sum")
            stats.duration_count = total(f"{histogram}_count")
            break
    else:
        requests = total("agentlog_http_requests_total")
        if requests:
            stats.work = requests
            stats.errors = sum(
                v
                for labels, v in samples["agentlog_http_requests_total"]
                if labels.get("status", "").startswith("5")
            )
            stats.duration_sum = total("agentlog_http_request_duration_seconds_sum")
            stats.duration_count = total("agentlog_http_request_duration_seconds_count")
        else:
            stats.work = total("agentlog_events_projected_total")  # the projector's
    stats.steps_sum = total("agentlog_turn_steps_sum")
    stats.steps_count = total("agentlog_turn_steps_count")
    stats.tokens_in = total("agentlog_model_tokens_total", type="input")
    stats.tokens_out = total("agentlog_model_tokens_total", type="output")
    stats.tokens_cache_read = total("agentlog_model_tokens_total", type="cache_read")
    stats.tokens_cache_write = total("agentlog_model_tokens_total", type="cache_write")
    stats.cost_usd = total("agentlog_model_cost_usd_total")
    stats.lag = total("agentlog_consumer_lag_records")
    stats.dead_letters = total("agentlog_dead_letters_total")
    return stats


def fleet(rows: list[Stats], name: str = "fleet") -> Stats:
    """The aggregate of some instances: sums, and rates over the sums."""
    roles = {r.role for r in rows}
    agg = Stats(name, roles.pop() if len(roles) == 1 else "all")
    for row in rows:
        for key in (
            "work errors duration_sum duration_count steps_sum steps_count tokens_in tokens_out"
            " tokens_cache_read tokens_cache_write cost_usd lag dead_letters"
        ).split():
            setattr(agg, key, getattr(agg, key) + getattr(row, key))
    return agg


@dataclass(frozen=True)
class Rules:
    """The outlier rule's k (MADs above the median), its floors for error rate, duration
    and steps per turn, and the least work an instance must have done to be compared."""

    k: float = 3.0
    min_work: float = 5
    error_floor: float = 0.02
    duration_floor_s: float = 0.25
    steps_floor: float = 0.5


def flag(rows: list[Stats], rules: Rules) -> None:
    """Mark each instance whose figures stand out from the same role's instances."""
    by_role: dict[str, list[Stats]] = defaultdict(list)
    for row in rows:
        if row.up and row.work >= rules.min_work:
            by_role[row.role].append(row)
    for peers in by_role.values():
        measures: list[tuple[str, Rule, Callable[[Stats], float | None]]] = [
            ("error rate", Rule(rules.k, rules.error_floor), lambda s: s.error_rate),
            ("duration", Rule(rules.k, rules.duration_floor_s), lambda s: s.mean_duration_s),
            ("steps/turn", Rule(rules.k, rules.steps_floor), lambda s: s.steps_per_turn),
        ]
        for what, rule, value in measures:
            values = {s.instance_id: v for s in peers if (v := value(s)) is not None}
            for verdict in outliers(values, rule):
                row = next(s for s in peers if s.instance_id == verdict.key)
                row.flags.append(
                    f"{what} {verdict.value:.3g} > {verdict.bound:.3g} (median {verdict.median:.3g})"
                )


@dataclass
class Snapshot:
    """Every live instance and the fleet, at one moment."""

    instances: list[Stats]
    fleet: Stats
    roles: dict[str, Stats]

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (`agentlog top --once --json`)."""
        return {
            "instances": [s.as_json() for s in self.instances],
            "fleet": self.fleet.as_json(),
            "roles": {role: s.as_json() for role, s in self.roles.items()},
            "outliers": [
                {"instance_id": s.instance_id, "role": s.role, "flags": s.flags}
                for s in self.instances
                if s.flags
            ],
        }


async def _scrape(client: httpx.AsyncClient, found: instances.Instance) -> Stats:
    if not found.metrics_url:
        return Stats(found.instance_id, found.role, up=False)
    try:
        response = await client.get(found.metrics_url)
        response.raise_for_status()
    except httpx.HTTPError:
        return Stats(found.instance_id, found.role, up=False)
    return parse(found.instance_id, found.role, response.text)


async def snapshot(database_url: str, rules: Rules = Rules(), within_s: float = 20.0) -> Snapshot:
    """Find the live instances, scrape them, aggregate and flag."""
    conn = await store.connect(database_url)
    try:
        found = await instances.live(conn, within_s)
    finally:
        await conn.close()
    return await measure(found, rules)


async def measure(found: list[instances.Instance], rules: Rules = Rules()) -> Snapshot:
    """Scrape these instances (each within a few seconds; one that does not answer is down),
    aggregate per role and for the fleet, and flag the outliers."""
    async with httpx.AsyncClient(timeout=3) as client:
        rows = list(await asyncio.gather(*(_scrape(client, f) for f in found)))
    flag(rows, rules)
    roles = {
        role: fleet([r for r in rows if r.role == role], role) for role in sorted({r.role for r in rows})
    }
    return Snapshot(rows, fleet(rows), roles)
