"""The failpoint spec (AGENTLOG_FAILPOINTS): its kinds, its errors, and a stall that blocks once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from processors import failpoints


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    failpoints.arm("")


def test_a_sleep_blocks_the_caller_on_the_nth_hit_only() -> None:
    failpoints.arm("a.point=sleep:0.2@2, other=kill@5")
    took = []
    for _ in range(3):
        started = time.monotonic()
        failpoints.hit("a.point")
        took.append(time.monotonic() - started)
    assert took[0] < 0.1 and took[1] >= 0.2 and took[2] < 0.1, took
    failpoints.hit("not.armed")


@pytest.mark.parametrize("spec", ["p=sleep", "p=sleep:x", "p=sleep:0", "p=sleep:-1@2", "p=kill@x", "p=stall"])
def test_a_bad_action_is_refused_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match="failpoint action"):
        failpoints.arm(spec)
