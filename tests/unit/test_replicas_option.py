"""`agentlog up --replicas`: one count for every worker role, or counts per role; each replica
a child of its own, named `role-k` (its instance id too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlog.devstack import WORKER_ROLES, parse_replicas, worker_children


def test_one_count_is_every_role() -> None:
    assert parse_replicas("3") == dict.fromkeys(WORKER_ROLES, 3)


def test_counts_per_role_leave_the_others_at_one() -> None:
    counts = parse_replicas("reactor=2, model=3")
    assert counts == {"projector": 1, "reactor": 2, "model": 3, "tools": 1, "subagents": 1}


@pytest.mark.parametrize("bad", ["0", "model", "model=x", "workers=2", "model=0", "reactor=2,,model"])
def test_a_bad_count_says_what_is_expected(bad: str) -> None:
    if bad == "reactor=2,,model":
        with pytest.raises(ValueError, match="'model' is not ROLE=N"):
            parse_replicas(bad)
        return
    with pytest.raises(ValueError, match="--replicas"):
        parse_replicas(bad)


def test_replicas_are_named_role_k_and_only_the_executors_get_the_service_token() -> None:
    children = worker_children(
        ["agentlog"], Path("logs"), parse_replicas("tools=2"), {"AGENTLOG_SERVICE_TOKEN": "s"}
    )
    names = [c.name for c in children]
    assert names == [
        "projector",
        "reactor",
        "model-worker",
        "tool-worker-1",
        "tool-worker-2",
        "subagent-worker",
    ]
    for child in children:
        assert child.own_env["AGENTLOG_INSTANCE"] == child.name
        assert ("AGENTLOG_SERVICE_TOKEN" in child.own_env) == child.name.startswith("tool-worker")
        assert child.log_path == Path("logs") / f"{child.name}.log"
