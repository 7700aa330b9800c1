"""The load test's pure parts: percentiles and the summary of a run."""

from __future__ import annotations

from decimal import Decimal

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentlog.load import LoadPlan, LoadResult, Tokens, TurnSample
from agentlog.load_report import distribution, percentile, summarize

samples = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200)


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([10.0], 99) == 10.0
    assert percentile(list(map(float, range(1, 101))), 95) == pytest.approx(95.05)


def test_percentile_refuses_no_samples_and_a_q_out_of_range() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within 0 and 100"):
        percentile([1.0], 101)


@given(samples, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_is_monotone_bounded_and_agrees_with_numpy(
    values: list[float], a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert min(values) <= percentile(values, low) <= percentile(values, high) <= max(values)
    assert percentile(values, a) == pytest.approx(float(numpy.percentile(values, a)), rel=1e-9, abs=1e-6)


def test_distribution_is_in_milliseconds_and_empty_without_samples() -> None:
    assert distribution([0.1, 0.2, 0.3])["p50"] == 200.0
    assert distribution([0.1, 0.2, 0.3])["count"] == 3
    assert distribution([]) == {
        "p50": None,
        "p95": None,
        "p99": None,
        "mean": None,
        "min": None,
        "max": None,
        "count": 0,
    }


def _sample(i: int, ok: bool = True) -> TurnSample:
    return TurnSample(
        f"s{i}",
        f"t{i}",
        ok,
        latency_s=1 + i / 10,
        first_event_s=0.1 if i % 2 else None,
        tokens=Tokens(10, 5, 100, 20),
        cost_usd=Decimal("0.001"),
        error=None if ok else "HTTP 503: Unavailable",
    )


def test_summary_counts_turns_errors_tokens_and_cost() -> None:
    result = LoadResult(
        LoadPlan(sessions=2, turns=2, streams=1),
        wall_s=2.0,
        samples=(_sample(0), _sample(1), _sample(2), _sample(3, ok=False)),
        setup_errors=("stream of s9: timed out",),
    )
    summary = summarize(result, {"model": "offline"})
    assert summary["turns"] == 4 and summary["completed"] == 3 and summary["errors"] == 2
    assert summary["error_samples"] == ["s3: HTTP 503: Unavailable", "stream of s9: timed out"]
    assert summary["throughput_turns_per_s"] == 1.5
    assert summary["latency_ms"]["count"] == 3 and summary["latency_ms"]["p50"] == 1100.0
    assert summary["first_event_ms"]["count"] == 2
    assert summary["tokens"] == {"input": 40, "output": 20, "cache_read": 400, "cache_write": 80}
    assert Decimal(summary["cost_usd"]) == Decimal("0.004")
    assert summary["latencies_ms"] == [1000.0, 1100.0, 1200.0]
    assert summary["config"] == {"model": "offline"}
