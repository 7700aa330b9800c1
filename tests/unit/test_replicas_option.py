"""`agentlog up --replicas`: one count for every worker role, or counts per role; each replica
a child of its own, named `role-k` (its instance id too)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agentlog import devstack
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


def test_a_taken_port_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert devstack.up(tmp_path / "data", {}, 2, api_port=port) == 2
    err = capsys.readouterr()
    assert f"port {port} is taken" in err.out + err.err
    assert not (tmp_path / "data" / "stack.json").exists()
