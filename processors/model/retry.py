"""Our one retry policy for model calls: bounded attempts, full-jitter backoff, `retry-after`, a deadline.

The Anthropic client runs with `max_retries=0`; every retry of a model call happens here, so
it is counted (the attempts go into the response) and bounded in one place.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from processors.model.port import ModelError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a retryable ModelError.

    `max_attempts` counts the first call; `deadline_s` bounds the whole call, waits included,
    measured from the first attempt; a wait is never planned past it.
    """

    max_attempts: int = 4
    base_s: float = 0.5
    max_backoff_s: float = 20.0
    deadline_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.max_backoff_s < 0 or self.deadline_s < 0:
            raise ValueError("base_s, max_backoff_s and deadline_s must not be negative")

    def backoff(self, failures: int, rand: float) -> float:
        """Full jitter: a uniform draw (`rand` in [0, 1)) below the capped exponential for `failures` >= 1."""
        # Cap the exponent: 2**failures overflows a float long before it matters.
        ceiling = min(self.max_backoff_s, self.base_s * 2.0 ** min(failures - 1, 64))
        return ceiling * rand

    def wait(self, failures: int, rand: float, retry_after_s: float | None) -> float:
        """The wait before the next attempt: the backoff, but never less than the server asked for."""
        delay = self.backoff(failures, rand)
        if retry_after_s is not None and retry_after_s > delay:
            delay = retry_after_s
        return delay


def _give_up(attempts: int, last: ModelError, why: str = "") -> ModelError:
    plural = "attempt" if attempts == 1 else "attempts"
    return ModelError(
        f"gave up after {attempts} {plural}{why}: {last.reason}",
        retryable=False,
        status=last.status,
        attempts=attempts,
    )


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[T, int]:
    """Call `fn` until it succeeds, retrying retryable ModelErrors; return (result, attempts).

    A non-retryable ModelError (and any other exception) propagates as raised. When the
    attempts or the deadline run out, a non-retryable ModelError says how many attempts
    were made and what the last error was.
    """
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            return await fn(), attempts
        except ModelError as err:
            if not err.retryable:
                err.attempts = attempts
                raise
            last = err
        if attempts >= policy.max_attempts:
            raise _give_up(attempts, last) from last
        delay = policy.wait(attempts, rand(), last.retry_after_s)
        remaining = policy.deadline_s - (clock() - start)
        if delay >= remaining:
            # Waiting less than the server asked would only earn another 429; waiting longer
            # would break the deadline. Either way this call is over.
            raise _give_up(attempts, last, f" (deadline {policy.deadline_s:g}s)") from last
        await sleep(delay)
