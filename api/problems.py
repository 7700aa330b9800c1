"""RFC 9457 problem+json: one table from exception to status, every error names what is wrong."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import invalid
from eventstore.errors import AgentlogError, AppendTimeout, LogError, RecordTooLarge, StoreError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"

# exception type -> (status, title)
STATUS: dict[type[Exception], tuple[int, str]] = {
    RecordTooLarge: (413, "Too large for the event log"),
    AppendTimeout: (503, "The event log did not acknowledge in time"),
    LogError: (503, "The event log is unavailable"),
    StoreError: (503, "The store is unavailable"),
    AgentlogError: (500, "Internal error"),
}


class Problem(Exception):
    """An error answer: status, title, detail and optional field errors."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str = "",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Register the exception handlers on the app."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = invalid.field_errors(list(exc.errors()), request.headers.get("content-type"), exc.body)
        shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(request, 422, "Invalid request", shown, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(psycopg.OperationalError)
    async def _database(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The connection was lost or none came within the pool's timeout (PoolTimeout is one):
        # a retriable 503 naming nothing of the database; the log has the detail.
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        health = getattr(request.app.state, "health", None)
        if health is not None:
            health.forget()
        return problem_response(
            request,
            503,
            "Service unavailable",
            "the database does not answer; try again shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(AgentlogError)
    async def _agentlog(request: Request, exc: AgentlogError) -> JSONResponse:
        for kind, (status, title) in STATUS.items():
            if isinstance(exc, kind):
                return problem_response(
                    request, status, title, str(exc), headers={"Retry-After": "1"} if exc.retriable else None
                )
        return problem_response(request, 500, "Internal error")
