"""Schemathesis hooks of test_schemathesis (loaded through SCHEMATHESIS_HOOKS): the server-error
check, knowing that a run given a deadline shorter than any run takes answers its documented 504."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.checks import CheckContext, not_a_server_error

RUNS = frozenset({"/v1/agent/run", "/v1/subagent/run"})
# Below this a run may honestly miss its deadline on a busy machine. At or above it, a run of
# the offline model that has not finished is stalled: a failure, as is one past the request timeout.
SHORT_DEADLINE_S = 5.0


@schemathesis.check
def no_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """`not_a_server_error`, but for a run's 504 when the fuzzer asked for a deadline under
    SHORT_DEADLINE_S (`timeout_s` down to 5e-324 is valid input, and its answer is a 504)."""
    if response.status_code == 504 and case.operation.path in RUNS and isinstance(case.body, dict):
        timeout = case.body.get("timeout_s", 30.0)
        if isinstance(timeout, int | float) and timeout < SHORT_DEADLINE_S:
            return None
    return not_a_server_error(ctx, response, case)
