"""The outlier rule and `agentlog top`'s arithmetic, on the source's example: an average
hides the one bad pod; the median and the MAD do not."""

from __future__ import annotations

from agentlog import top
from observe.metrics import Metrics
from observe.outliers import Rule, outliers


def test_the_pod_with_15_percent_errors_is_flagged_where_the_average_looks_fine() -> None:
    rates = {"pod-1": 0.03, "pod-2": 0.05, "pod-3": 0.15}
    assert sum(rates.values()) / 3 < 0.08  # the aggregate alone looks acceptable
    [verdict] = outliers(rates, Rule(k=3.0))
    assert verdict.key == "pod-3"
    assert verdict.median == 0.05
    assert abs(verdict.mad - 0.02) < 1e-12


def test_steps_per_turn_of_the_source_example() -> None:
    steps = {"pod-1": 4.2, "pod-2": 3.8, "pod-3": 12.1}
    assert [v.key for v in outliers(steps, Rule(k=3.0))] == ["pod-3"]


def test_peers_alike_are_not_flagged_for_a_difference_below_the_floor() -> None:
    assert outliers({"a": 0.0, "b": 0.0, "c": 0.01}, Rule(k=3.0, floor=0.02)) == []
    assert [v.key for v in outliers({"a": 0.0, "b": 0.0, "c": 0.3}, Rule(k=3.0, floor=0.02))] == ["c"]


def test_too_few_peers_are_not_compared() -> None:
    assert outliers({"a": 0.0, "b": 0.9}, Rule()) == []


def test_low_values_are_never_flagged() -> None:
    assert outliers({"a": 0.5, "b": 0.5, "c": 0.0}, Rule(k=3.0)) == []


def _instance(name: str, ok: int, failed: int, steps: float) -> top.Stats:
    m = Metrics(name, "reactor")
    m.turns.labels("completed").inc(ok)
    m.turns.labels("failed").inc(failed)
    for _ in range(ok + failed):
        m.turn_duration.labels("completed").observe(1.0)
        m.turn_steps.observe(steps)
    return top.parse(name, "reactor", m.exposition().decode())


def test_top_flags_the_instance_from_scraped_text_and_sums_the_fleet() -> None:
    rows = [_instance("pod-1", 97, 3, 4), _instance("pod-2", 95, 5, 4), _instance("pod-3", 85, 15, 12)]
    top.flag(rows, top.Rules())
    flagged = {r.instance_id: r.flags for r in rows if r.flags}
    assert set(flagged) == {"pod-3"}
    assert any(f.startswith("error rate") for f in flagged["pod-3"])
    assert any(f.startswith("steps/turn") for f in flagged["pod-3"])
    fleet = top.fleet(rows)
    assert fleet.work == 300 and fleet.errors == 23
    assert fleet.error_rate is not None and fleet.error_rate < 0.08
    assert rows[0].mean_duration_s == 1.0 and rows[2].steps_per_turn == 12


def test_instances_with_little_work_are_left_out_of_the_comparison() -> None:
    rows = [_instance("a", 10, 0, 1), _instance("b", 10, 0, 1), _instance("c", 1, 3, 1)]
    top.flag(rows, top.Rules(min_work=5))
    assert not any(r.flags for r in rows)
