"""The client's errors: an api's problem+json answer becomes an exception here, once; each says
whether a retry can help (`retriable`)::

    AgentlogError          the api answered an error: status, title, detail, errors[field, message]
     └─ ApiUnreachable     no answer at all (refused, reset, timed out): status 0, always retriable
    NotConfigured          neither the environment nor a stack file says where the api is
    TimeoutError           (builtin) `wait_for_turn` ran out of time; the turn goes on
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["RETRIABLE", "AgentlogError", "ApiUnreachable", "FieldError", "NotConfigured", "problem_error"]

RETRIABLE = frozenset({408, 425, 429, 502, 503, 504})


@dataclass(frozen=True)
class FieldError:
    """One wrong field of a request, as the api named it."""

    field: str
    message: str


class AgentlogError(Exception):
    """An error answer of the api (RFC 9457 problem+json), or no answer (`ApiUnreachable`)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[FieldError] | None = None,
        *,
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.problem = dict(problem or {})
        self.retry_after = retry_after
        wrong = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(
            f"{status} {title}" + (f": {detail}" if detail else "") + (f" ({wrong})" if wrong else "")
        )

    @property
    def fields(self) -> list[str]:
        """The names of the wrong fields."""
        return [e.field for e in self.errors]

    @property
    def retriable(self) -> bool:
        """Whether the same request may succeed later (the api said so, or the status means so)."""
        return self.status in RETRIABLE or self.retry_after is not None


class ApiUnreachable(AgentlogError):
    """The api gave no answer: connection refused or reset, or a timeout."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(0, "api unreachable", f"{url}: {type(cause).__name__}: {cause}")

    @property
    def retriable(self) -> bool:
        return True


class NotConfigured(RuntimeError):
    """Where the api (or the database) is was not given, neither in the environment nor a stack file."""


def problem_error(response: httpx.Response) -> AgentlogError:
    """The exception an error response stands for (its body must have been read)."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
    title = str(problem.get("title") or response.reason_phrase or f"HTTP {response.status_code}")
    detail = str(problem.get("detail") or ("" if problem else response.text[:500]))
    errors = [
        FieldError(str(e.get("field", "")), str(e.get("message", "")))
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    if not errors and isinstance(problem.get("field"), str):  # a single-field problem (Idempotency-Key)
        errors = [FieldError(problem["field"], detail)]
    retry_after = response.headers.get("retry-after")
    return AgentlogError(
        response.status_code,
        title,
        detail,
        errors,
        problem=problem,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
