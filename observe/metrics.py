"""The metrics an agentlog process exports (Prometheus text): one registry per instance.

Names follow Prometheus conventions: prefix `agentlog_`, base units, counters end in
`_total`, durations are `_seconds` histograms. Labels stay low-cardinality: outcomes,
models, tool names, partitions; never session, turn or user ids.
"""

from __future__ import annotations

import functools
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)

TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")


@functools.cache
def version() -> str:
    """This package's version."""
    try:
        return metadata.version("agentlog")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "dev"


class Metrics:
    """Every metric of one process (or of one in-process worker, in tests), in its own registry."""

    def __init__(self, instance: str, role: str) -> None:
        self.instance = instance
        self.role = role
        r = self.registry = CollectorRegistry()
        self.info = Gauge(
            "agentlog_instance_info",
            "This process: its instance id, role and version (always 1).",
            ["instance_id", "role", "version"],
            registry=r,
        )
        self.info.labels(instance, role, version()).set(1)
        # Turns (the reactor ends them).
        self.turns = Counter("agentlog_turns", "Turns ended, by outcome.", ["outcome"], registry=r)
        for outcome in ("completed", "failed", "refused"):  # present from the start, so rate() sees the first
            self.turns.labels(outcome)
        self.turn_duration = Histogram(
            "agentlog_turn_duration_seconds",
            "Turn duration from its start to its end.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.turn_steps = Histogram(
            "agentlog_turn_steps", "Model calls per ended turn.", buckets=STEP_BUCKETS, registry=r
        )
        # Model calls (the model worker).
        self.model_calls = Counter(
            "agentlog_model_calls", "Model calls, by model and outcome.", ["model", "outcome"], registry=r
        )
        self.model_duration = Histogram(
            "agentlog_model_call_duration_seconds",
            "Model call duration, retries included.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.model_ttft = Histogram(
            "agentlog_model_time_to_first_token_seconds",
            "Time from a model call's start (retries included) to its first text (answers with text only).",
            ["model"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "agentlog_model_tokens", "Tokens used, by model and type.", ["model", "type"], registry=r
        )
        self.cost = Counter(
            "agentlog_model_cost_usd",
            "Cost of model calls in USD (priced calls only).",
            ["model"],
            registry=r,
        )
        self.unpriced = Counter(
            "agentlog_model_unpriced_calls",
            "Model calls no price source knows: their cost is unknown (NULL), not 0.",
            registry=r,
        )
        self.deprecated = Counter(
            "agentlog_model_deprecated_calls",
            "Model calls on a model the SDK marks deprecated.",
            ["model"],
            registry=r,
        )
        self.model_in_flight = Gauge(
            "agentlog_model_calls_in_flight",
            "Model calls under way in this process (KEDA scales model workers on it, beside lag).",
            registry=r,
        )
        self.retries = Counter(
            "agentlog_model_retries", "Model call attempts beyond the first.", ["model"], registry=r
        )
        # Tools (the tool executor).
        self.tool_calls = Counter(
            "agentlog_tool_calls", "Tool calls, by tool and outcome.", ["tool", "outcome"], registry=r
        )
        self.tool_duration = Histogram(
            "agentlog_tool_call_duration_seconds",
            "Tool call duration.",
            ["tool"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        # The log (every folding worker and the projector).
        self.consumer_lag = Gauge(
            "agentlog_consumer_lag_records",
            "Records in the log not yet read, per consumer and partition.",
            ["consumer", "partition"],
            registry=r,
        )
        self.log_gap = Gauge(
            "agentlog_log_gap_records",
            "Records the log no longer holds that were never projected: lost (finite retention?).",
            ["consumer", "partition"],
            registry=r,
        )
        self.cached_sessions = Gauge(
            "agentlog_cached_sessions",
            "Session states a folding worker holds (bounded by AGENTLOG_SESSION_CACHE_*).",
            ["consumer"],
            registry=r,
        )
        self.session_loads = Counter(
            "agentlog_session_loads",
            "Session states loaded from Postgres (first seen, or evicted and needed again).",
            ["consumer"],
            registry=r,
        )
        self.projection_lag = Gauge(
            "agentlog_projection_lag_seconds",
            "Seconds from the append of the latest projected event to its projection (0 when caught up).",
            registry=r,
        )
        self.projected = Counter("agentlog_events_projected", "Events projected into Postgres.", registry=r)
        self.dead_letters = Counter(
            "agentlog_dead_letters", "Records set aside as dead letters.", ["consumer"], registry=r
        )
        self.shredded = Counter(
            "agentlog_shredded_records",
            "Records passed over because their session was deleted (its data key destroyed).",
            ["consumer"],
            registry=r,
        )
        # The api.
        self.http_requests = Counter(
            "agentlog_http_requests",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "agentlog_http_request_duration_seconds",
            "HTTP request duration (streams: until the response starts).",
            ["method", "route"],
            buckets=FAST_BUCKETS,
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def exported_names() -> set[str]:
    """Every series name the code exports (a histogram as its _bucket, _sum and _count)."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in Metrics("probe", "probe").registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
