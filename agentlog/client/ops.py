"""The calls of the api, each written once: a generator that yields the requests (and pauses) it
needs and returns the parsed answer. `AsyncAgentlog` and `Agentlog` only drive them."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from agentlog.client.errors import problem_error
from api.models import (
    AgentRunResult,
    EventPage,
    SessionPage,
    SessionView,
    TurnAccepted,
    TurnView,
)

__all__ = [
    "Op",
    "Request",
    "Sleep",
    "approvals",
    "create_session",
    "decide",
    "delete",
    "events_page",
    "headers",
    "request_options",
    "run",
    "segment",
    "send",
    "session",
    "sessions_page",
    "turn",
    "wait_for_turn",
]

FINISHED = ("completed", "failed")
MAX_SERVER_WAIT = 300.0  # the api's bound on ?wait=; longer waits poll for the rest
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One HTTP request a call needs."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # beyond the client's own, for calls that wait on the server


@dataclass(frozen=True)
class Sleep:
    """A pause between two requests (polling)."""

    seconds: float


Op = Generator[Request | Sleep, httpx.Response | None, T]


def headers(token: str | None) -> dict[str, str]:
    """The headers of every request of a client."""
    headers = {"User-Agent": "agentlog-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def request_options(step: Request, base_timeout: float) -> dict[str, Any]:
    """The keyword arguments of `httpx.(Async)Client.request` for a step."""
    return {
        "params": step.params,
        "json": step.body,
        "headers": step.headers,
        "timeout": httpx.Timeout(base_timeout + (step.timeout or 0)),
    }


def segment(value: str) -> str:
    """A path segment, escaped."""
    return quote(value, safe="")


def _ok(response: httpx.Response | None) -> httpx.Response:
    assert response is not None, "a request step gets a response"
    if response.is_error:
        raise problem_error(response)
    return response


def _parse(response: httpx.Response | None, model: type[M]) -> M:
    return model.model_validate_json(_ok(response).content)


def _given(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings the caller set: None leaves the server's default."""
    return {k: v for k, v in settings.items() if v is not None}


def _get(path: str, model: type[M], params: dict[str, Any] | None = None) -> Op[M]:
    return _parse((yield Request("GET", path, params=_given(params or {}))), model)


def create_session(settings: Mapping[str, Any]) -> Op[SessionView]:
    """POST /v1/sessions."""
    return _parse((yield Request("POST", "/v1/sessions", body=_given(settings))), SessionView)


def fork(session_id: str, settings: Mapping[str, Any]) -> Op[SessionView]:
    """POST /v1/sessions/{id}/fork."""
    path = f"/v1/sessions/{segment(session_id)}/fork"
    return _parse((yield Request("POST", path, body=_given(settings))), SessionView)


def session(session_id: str) -> Op[SessionView]:
    """GET /v1/sessions/{id}."""
    return (yield from _get(f"/v1/sessions/{segment(session_id)}", SessionView))


def sessions_page(status: str | None, limit: int, after: str | None) -> Op[SessionPage]:
    """GET /v1/sessions, one page."""
    return (yield from _get("/v1/sessions", SessionPage, {"status": status, "limit": limit, "after": after}))


def turn(session_id: str, turn_id: str) -> Op[TurnView]:
    """GET /v1/sessions/{id}/turns/{turn_id}."""
    return (yield from _get(f"/v1/sessions/{segment(session_id)}/turns/{segment(turn_id)}", TurnView))


def events_page(session_id: str, after: int, limit: int) -> Op[EventPage]:
    """GET /v1/sessions/{id}/events, one page."""
    path = f"/v1/sessions/{segment(session_id)}/events"
    return (yield from _get(path, EventPage, {"after": after, "limit": limit}))


def send(
    session_id: str,
    content: str | list[dict[str, Any]],
    key: str | None,
    wait: float | None,
    settings: Mapping[str, Any],
) -> Op[TurnAccepted | TurnView]:
    """POST /v1/sessions/{id}/messages; with `wait`, then poll the turn for what the server's wait left."""
    started = time.monotonic()
    server_wait = min(wait, MAX_SERVER_WAIT) if wait else None
    response = yield Request(
        "POST",
        f"/v1/sessions/{segment(session_id)}/messages",
        params={"wait": server_wait} if server_wait else None,
        body={"content": content, **_given(settings)},
        headers={"Idempotency-Key": key} if key else {},
        timeout=server_wait,
    )
    assert response is not None
    location = response.headers.get("location", "")
    if response.status_code == 409 and key and "/turns/" in location:
        # The same key's request is still running: it was accepted before, so answer that.
        turn_id = location.rsplit("/", 1)[-1]
        accepted: TurnAccepted | TurnView = TurnAccepted(
            session_id=session_id, turn_id=turn_id, idempotency_key=key, status="in_progress"
        )
    elif response.status_code == 200:
        accepted = _parse(response, TurnView)
    else:
        accepted = _parse(response, TurnAccepted)
    left = (wait or 0) - (time.monotonic() - started)
    if isinstance(accepted, TurnAccepted) and wait and left > 0.5:
        return (yield from wait_for_turn(session_id, accepted.turn_id, left))
    return accepted


def wait_for_turn(session_id: str, turn_id: str, timeout: float) -> Op[TurnView]:
    """Poll a turn with backoff until it finished; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    path = f"/v1/sessions/{segment(session_id)}/turns/{segment(turn_id)}"
    while True:
        response = yield Request("GET", path)
        assert response is not None
        # 404 right after a post: the projection has not caught up with the session or turn yet.
        if response.status_code != 404:
            turn = _parse(response, TurnView)
            if turn.status in FINISHED:
                return turn
        left = deadline - time.monotonic()
        if left <= 0:
            if response.status_code == 404:
                raise problem_error(response)
            raise TimeoutError(f"turn {turn_id} of session {session_id} did not finish within {timeout:g} s")
        yield Sleep(min(delay, left))
        delay = min(delay * 1.5, 1.0)


def delete(session_id: str) -> Op[None]:
    """DELETE /v1/sessions/{id}."""
    _ok((yield Request("DELETE", f"/v1/sessions/{segment(session_id)}")))


def run(prompt: str, key: str | None, options: Mapping[str, Any]) -> Op[AgentRunResult]:
    """POST /v1/agent/run, waiting as long as the run may take."""
    body = {"prompt": prompt, **_given(options)}
    response = yield Request(
        "POST",
        "/v1/agent/run",
        body=body,
        headers={"Idempotency-Key": key} if key else {},
        timeout=float(body.get("timeout_s", 30.0)),
    )
    return _parse(response, AgentRunResult)


def approvals(session_id: str, status: str | None) -> Op[list[dict[str, Any]]]:
    """GET /v1/sessions/{id}/approvals."""
    response = yield Request(
        "GET", f"/v1/sessions/{segment(session_id)}/approvals", params=_given({"status": status})
    )
    data: list[dict[str, Any]] = _ok(response).json()["data"]
    return data


def decide(session_id: str, approval_id: str, decision: str, reason: str | None) -> Op[dict[str, Any]]:
    """POST /v1/sessions/{id}/approvals/{approval_id}: approve or deny."""
    response = yield Request(
        "POST",
        f"/v1/sessions/{segment(session_id)}/approvals/{segment(approval_id)}",
        body=_given({"decision": decision, "reason": reason}),
    )
    answer: dict[str, Any] = _ok(response).json()
    return answer
