"""The retry policy with a fake clock and sleep: backoff, jitter, retry-after, deadline, give-up."""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.model.port import ModelError
from processors.model.retry import RetryPolicy, call_with_retry

T = TypeVar("T")


class FakeTime:
    """A clock that only moves when slept on (or when told to)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Raises the given errors in turn, then answers "ok"; each call may take `cost_s` of fake time."""

    def __init__(self, *errors: BaseException, time: FakeTime | None = None, cost_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.time = time
        self.cost_s = cost_s

    async def __call__(self) -> str:
        self.calls += 1
        if self.time is not None:
            self.time.now += self.cost_s
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def overloaded(retry_after_s: float | None = None) -> ModelError:
    reason = "529 overloaded_error: Overloaded"
    return ModelError(reason, retryable=True, status=529, retry_after_s=retry_after_s)


def rands(*values: float) -> Any:
    it: Iterator[float] = iter(values)
    return lambda: next(it)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really suspends (fake sleep) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


async def test_success_first_time_is_one_attempt() -> None:
    t = FakeTime()
    assert await call_with_retry(Flaky(), RetryPolicy(), sleep=t.sleep, clock=t.clock) == ("ok", 1)
    assert t.sleeps == []


async def test_retryable_errors_are_retried_and_counted() -> None:
    t = FakeTime()
    fn = Flaky(overloaded(), overloaded())
    result = await call_with_retry(fn, RetryPolicy(), sleep=t.sleep, clock=t.clock, rand=lambda: 0.5)
    assert result == ("ok", 3)
    assert fn.calls == 3
    assert t.sleeps == [0.25, 0.5]  # half of 0.5 s, then half of 1 s


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(base_s=0.5, max_backoff_s=20.0)
    assert [policy.backoff(n, 1.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
    assert policy.backoff(10_000, 1.0) == 20.0  # no overflow on a long run of failures


async def test_backoff_waits_stay_under_the_cap() -> None:
    t = FakeTime()
    policy = RetryPolicy(max_attempts=10, base_s=0.5, max_backoff_s=3.0, deadline_s=1000)
    fn = Flaky(*(overloaded() for _ in range(9)))
    await call_with_retry(fn, policy, sleep=t.sleep, clock=t.clock, rand=lambda: 0.999)
    assert len(t.sleeps) == 9
    assert all(s <= 3.0 for s in t.sleeps)
    assert t.sleeps[-1] == pytest.approx(3.0 * 0.999)


async def test_full_jitter_draws_anywhere_below_the_ceiling() -> None:
    t = FakeTime()
    fn = Flaky(overloaded(), overloaded(), overloaded())
    policy = RetryPolicy(base_s=1.0, max_backoff_s=20.0)
    await call_with_retry(fn, policy, sleep=t.sleep, clock=t.clock, rand=rands(0.0, 0.5, 0.25))
    assert t.sleeps == [0.0, 1.0, 1.0]  # 0 x 1 s, 0.5 x 2 s, 0.25 x 4 s


async def test_retry_after_is_a_floor_on_the_wait() -> None:
    t = FakeTime()
    fn = Flaky(overloaded(retry_after_s=3.0), overloaded(retry_after_s=0.1))
    policy = RetryPolicy(base_s=1.0)
    await call_with_retry(fn, policy, sleep=t.sleep, clock=t.clock, rand=lambda: 1.0)
    assert t.sleeps == [3.0, 2.0]  # the server's 3 s beats a 1 s backoff; a 2 s backoff beats its 0.1 s


async def test_retry_after_past_the_deadline_gives_up_without_waiting() -> None:
    t = FakeTime()
    fn = Flaky(overloaded(retry_after_s=200.0))
    with pytest.raises(ModelError) as info:
        await call_with_retry(fn, RetryPolicy(deadline_s=120), sleep=t.sleep, clock=t.clock)
    assert t.sleeps == []
    assert fn.calls == 1
    assert info.value.reason == "gave up after 1 attempt (deadline 120s): 529 overloaded_error: Overloaded"


async def test_deadline_bounds_slow_attempts() -> None:
    t = FakeTime()
    fn = Flaky(*(overloaded() for _ in range(10)), time=t, cost_s=50.0)
    policy = RetryPolicy(max_attempts=10, deadline_s=120)
    with pytest.raises(ModelError) as info:
        await call_with_retry(fn, policy, sleep=t.sleep, clock=t.clock, rand=lambda: 0.5)
    assert fn.calls == 3  # 50 s each: a fourth attempt would start past the deadline
    assert "deadline 120s" in info.value.reason
    assert t.now < policy.deadline_s + 50.0  # the last attempt started before the deadline


async def test_non_retryable_is_raised_as_is_without_retry() -> None:
    t = FakeTime()
    bad = ModelError("400 invalid_request_error: bad", retryable=False, status=400)
    fn = Flaky(bad)
    with pytest.raises(ModelError) as info:
        await call_with_retry(fn, RetryPolicy(), sleep=t.sleep, clock=t.clock)
    assert info.value is bad
    assert fn.calls == 1
    assert t.sleeps == []


async def test_other_exceptions_propagate_untouched() -> None:
    t = FakeTime()
    fn = Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        await call_with_retry(fn, RetryPolicy(), sleep=t.sleep, clock=t.clock)
    assert fn.calls == 1


async def test_give_up_says_how_many_attempts_and_the_last_error() -> None:
    t = FakeTime()
    last = ModelError("529 overloaded_error: still overloaded", retryable=True, status=529)
    fn = Flaky(overloaded(), overloaded(), overloaded(), last)
    with pytest.raises(ModelError) as info:
        await call_with_retry(fn, RetryPolicy(max_attempts=4), sleep=t.sleep, clock=t.clock)
    err = info.value
    assert err.reason == "gave up after 4 attempts: 529 overloaded_error: still overloaded"
    assert str(err) == err.reason
    assert err.retryable is False
    assert err.status == 529
    assert err.__cause__ is last
    assert fn.calls == 4
    assert len(t.sleeps) == 3


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline_s=-1)


@given(
    max_attempts=st.integers(1, 8),
    base_s=st.floats(0, 5),
    max_backoff_s=st.floats(0, 30),
    deadline_s=st.floats(0, 100),
    retry_afters=st.lists(st.none() | st.floats(0, 60), min_size=8, max_size=8),
    jitter=st.floats(0, 1, exclude_max=True),
)
def test_any_run_is_bounded(
    max_attempts: int,
    base_s: float,
    max_backoff_s: float,
    deadline_s: float,
    retry_afters: list[float | None],
    jitter: float,
) -> None:
    t = FakeTime()
    policy = RetryPolicy(max_attempts, base_s, max_backoff_s, deadline_s)
    fn = Flaky(*(overloaded(ra) for ra in retry_afters))
    with pytest.raises(ModelError) as info:
        drive(call_with_retry(fn, policy, sleep=t.sleep, clock=t.clock, rand=lambda: jitter))
    assert not info.value.retryable
    assert fn.calls <= max_attempts
    assert len(t.sleeps) == fn.calls - 1
    assert sum(t.sleeps) < deadline_s or not t.sleeps
    for wait, ra in zip(t.sleeps, retry_afters, strict=False):
        assert wait >= (ra or 0.0)
        assert wait <= max(max_backoff_s, ra or 0.0)
