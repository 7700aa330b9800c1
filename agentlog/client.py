"""The Python client of the HTTP api (v1): `AsyncAgentlog` over `httpx.AsyncClient`, `Agentlog` over
`httpx.Client`, the same methods on both, answers typed with the api's own models (`api.models`).

Each call is written once, as a generator that yields the requests (and pauses) it needs and
returns the parsed answer; the two clients only drive it, one with `await`, one without.

Errors (problem+json answers become exceptions here, once)::

    AgentlogError          the api answered an error: status, title, detail, errors[field, message]
     └─ ApiUnreachable     no answer at all (refused, reset, timed out): status 0, always retriable
    NotConfigured          neither the environment nor a stack file says where the api is
    TimeoutError           (builtin) `wait_for_turn` ran out of time; the turn goes on
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from api.models import (
    AgentRunResult,
    EventPage,
    EventView,
    SessionPage,
    SessionSummary,
    SessionView,
    TextDelta,
    TurnAccepted,
    TurnView,
)

__all__ = [
    "Agentlog",
    "AgentlogError",
    "ApiUnreachable",
    "AsyncAgentlog",
    "FieldError",
    "NotConfigured",
    "SSEMessage",
    "SSEParser",
    "StackInfo",
    "from_stack",
    "locate",
    "problem_error",
]

DEFAULT_STACK = Path(".agentlog/stack.json")
FINISHED = ("completed", "failed")
MAX_SERVER_WAIT = 300.0  # the api's bound on ?wait=; longer waits poll for the rest
RETRIABLE = frozenset({408, 425, 429, 502, 503, 504})
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# --- errors ---------------------------------------------------------------------------------


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


# --- where the stack is ---------------------------------------------------------------------


@dataclass(frozen=True)
class StackInfo:
    """Where the api and the database are, and the token to use."""

    api_url: str | None
    api_token: str | None
    database_url: str | None


def locate(path: str | Path = DEFAULT_STACK, env: Mapping[str, str] | None = None) -> StackInfo:
    """The stack from `AGENTLOG_API_URL` / `AGENTLOG_API_TOKEN` / `AGENTLOG_DATABASE_URL`, else from
    the stack file `agentlog up` writes. The file's token goes only to the file's api."""
    env = os.environ if env is None else env
    path = Path(path)
    stack: dict[str, Any] = {}
    if path.exists():
        loaded = json.loads(path.read_text())
        stack = loaded if isinstance(loaded, dict) else {}
    api_url = env.get("AGENTLOG_API_URL") or stack.get("api_url")
    token = env.get("AGENTLOG_API_TOKEN")
    if token is None and api_url == stack.get("api_url"):
        token = stack.get("api_token")
    return StackInfo(
        api_url=api_url or None,
        api_token=token or None,
        database_url=env.get("AGENTLOG_DATABASE_URL") or stack.get("database_url") or None,
    )


def _api_of(path: str | Path, env: Mapping[str, str] | None) -> StackInfo:
    info = locate(path, env)
    if info.api_url is None:
        raise NotConfigured(
            f"no api to talk to: set AGENTLOG_API_URL (and AGENTLOG_API_TOKEN), or run `agentlog up`"
            f" here so that {path} exists"
        )
    return info


def from_stack(
    path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Agentlog:
    """A (sync) client of the api the stack file or the environment names; see `locate`."""
    info = _api_of(path, env)
    return Agentlog(info.api_url or "", info.api_token, timeout=timeout)


# --- the calls, written once -----------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None  # beyond the client's own, for calls that wait on the server


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Op = Generator[_Request | _Sleep, httpx.Response | None, T]


def _seg(value: str) -> str:
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


def _create_session(settings: Mapping[str, Any]) -> _Op[SessionView]:
    return _parse((yield _Request("POST", "/v1/sessions", body=_given(settings))), SessionView)


def _get(path: str, model: type[M], params: dict[str, Any] | None = None) -> _Op[M]:
    return _parse((yield _Request("GET", path, params=_given(params or {}))), model)


def _send(
    session_id: str,
    content: str | list[dict[str, Any]],
    key: str | None,
    wait: float | None,
    settings: Mapping[str, Any],
) -> _Op[TurnAccepted | TurnView]:
    started = time.monotonic()
    server_wait = min(wait, MAX_SERVER_WAIT) if wait else None
    response = yield _Request(
        "POST",
        f"/v1/sessions/{_seg(session_id)}/messages",
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
        return (yield from _wait_for_turn(session_id, accepted.turn_id, left))
    return accepted


def _wait_for_turn(session_id: str, turn_id: str, timeout: float) -> _Op[TurnView]:
    deadline = time.monotonic() + timeout
    delay = 0.05
    path = f"/v1/sessions/{_seg(session_id)}/turns/{_seg(turn_id)}"
    while True:
        response = yield _Request("GET", path)
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
        yield _Sleep(min(delay, left))
        delay = min(delay * 1.5, 1.0)


def _delete(session_id: str) -> _Op[None]:
    _ok((yield _Request("DELETE", f"/v1/sessions/{_seg(session_id)}")))


def _run(prompt: str, key: str | None, options: Mapping[str, Any]) -> _Op[AgentRunResult]:
    body = {"prompt": prompt, **_given(options)}
    response = yield _Request(
        "POST",
        "/v1/agent/run",
        body=body,
        headers={"Idempotency-Key": key} if key else {},
        timeout=float(body.get("timeout_s", 30.0)),
    )
    return _parse(response, AgentRunResult)


def _approvals(session_id: str, status: str | None) -> _Op[list[dict[str, Any]]]:
    response = yield _Request(
        "GET", f"/v1/sessions/{_seg(session_id)}/approvals", params=_given({"status": status})
    )
    data: list[dict[str, Any]] = _ok(response).json()["data"]
    return data


def _decide(session_id: str, approval_id: str, decision: str, reason: str | None) -> _Op[dict[str, Any]]:
    response = yield _Request(
        "POST",
        f"/v1/sessions/{_seg(session_id)}/approvals/{_seg(approval_id)}",
        body=_given({"decision": decision, "reason": reason}),
    )
    answer: dict[str, Any] = _ok(response).json()
    return answer


# --- server-sent events ------------------------------------------------------------------------


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched server-sent event."""

    event: str
    data: str
    id: str | None


class SSEParser:
    """Lines of a `text/event-stream` in, messages out (the WHATWG rules this api needs)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SSEMessage | None:
        """Take one line (without its end); a blank line dispatches the message it completes."""
        if not line:
            message = None
            if self._data:
                message = SSEMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class _Cursor:
    """A stream's place: the last sequence seen (sent as Last-Event-ID on reconnecting), so that a
    dropped connection loses and repeats nothing; and how many reconnects failed in a row."""

    def __init__(self, after: int | None, attempts: int) -> None:
        self.last = after
        self.attempts = attempts
        self.failures = 0

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        return headers

    def take(self, message: SSEMessage) -> EventView | TextDelta | None:
        if message.event == "text_delta":
            return TextDelta.model_validate_json(message.data)
        if message.id is None:
            return None  # not an event of the log: nothing this client knows
        event = EventView.model_validate_json(message.data)
        if self.last is not None and event.seq <= self.last:
            return None
        self.last = event.seq
        self.failures = 0
        return event

    def failed(self, error: AgentlogError) -> float:
        """Seconds to wait before reconnecting; raises once `attempts` failed in a row."""
        if error.status and not error.retriable:
            raise error
        self.failures += 1
        if self.failures > self.attempts:
            raise error
        return error.retry_after or min(0.1 * 2 ** (self.failures - 1), 5.0)


# --- the clients -------------------------------------------------------------------------------


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "agentlog-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _timeout(base: float, extra: float | None) -> httpx.Timeout:
    return httpx.Timeout(base + (extra or 0))


class AsyncAgentlog:
    """The api, from asyncio: `async with AsyncAgentlog(url, token) as client: ...`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    @classmethod
    def from_stack(
        cls, path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> Self:
        """A client of the api the stack file or the environment names; see `locate`."""
        info = _api_of(path, env)
        return cls(info.api_url or "", info.api_token, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _drive(self, op: _Op[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = await self._http.request(
                    step.method,
                    step.path,
                    params=step.params,
                    json=step.body,
                    headers=step.headers,
                    timeout=_timeout(self.timeout, step.timeout),
                )
            except httpx.TransportError as exc:
                op.close()
                raise ApiUnreachable(self.base_url, exc) from exc

    async def create_session(self, **settings: Any) -> SessionView:
        """Create a session: `session_id`, `model`, `system`, `tools`, `approvals`, `ttl_seconds`,
        `policy`, `max_steps`, `token_budget`, `max_tokens`, `metadata` (all optional)."""
        return await self._drive(_create_session(settings))

    async def send(
        self,
        session_id: str,
        content: str | list[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        **session_settings: Any,
    ) -> TurnAccepted | TurnView:
        """Post a user turn; with `wait`, the finished turn if it ends within `wait` seconds."""
        return await self._drive(_send(session_id, content, idempotency_key, wait, session_settings))

    async def wait_for_turn(
        self,
        session_id: str,
        turn_id: str,
        timeout: float = 60,  # noqa: ASYNC109 - a poll deadline, the same signature as the sync client's
    ) -> TurnView:
        """The turn once it completed or failed (polling with backoff); TimeoutError after `timeout`."""
        return await self._drive(_wait_for_turn(session_id, turn_id, timeout))

    async def turn(self, session_id: str, turn_id: str) -> TurnView:
        """One turn as it is now."""
        return await self._drive(_get(f"/v1/sessions/{_seg(session_id)}/turns/{_seg(turn_id)}", TurnView))

    async def session(self, session_id: str) -> SessionView:
        """A session: its messages and metadata."""
        return await self._drive(_get(f"/v1/sessions/{_seg(session_id)}", SessionView))

    async def sessions_page(
        self, status: str | None = None, limit: int = 50, after: str | None = None
    ) -> SessionPage:
        """One page of the caller's sessions in id order (`after` = the previous page's `last_id`)."""
        params = {"status": status, "limit": limit, "after": after}
        return await self._drive(_get("/v1/sessions", SessionPage, params))

    async def sessions(self, status: str | None = None, limit: int = 50) -> AsyncIterator[SessionSummary]:
        """Every session of the caller, fetched `limit` at a time."""
        after: str | None = None
        while True:
            page = await self.sessions_page(status, limit, after)
            for summary in page.data:
                yield summary
            if not page.has_more or page.last_id is None:
                return
            after = page.last_id

    async def delete(self, session_id: str) -> None:
        """Delete a session (asynchronously: it answers 404 once the deletion is projected)."""
        await self._drive(_delete(session_id))

    async def events_page(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        """One page of a session's events after sequence number `after`."""
        path = f"/v1/sessions/{_seg(session_id)}/events"
        return await self._drive(_get(path, EventPage, {"after": after, "limit": limit}))

    async def events(self, session_id: str, after: int = 0, limit: int = 100) -> AsyncIterator[EventView]:
        """A session's stored events after `after`, page by page, to the current end."""
        while True:
            page = await self.events_page(session_id, after, limit)
            for event in page.data:
                yield event
            if not page.has_more or page.last_id is None:
                return
            after = page.last_id

    async def stream(
        self, session_id: str, after: int | None = None, *, attempts: int = 10
    ) -> AsyncGenerator[EventView | TextDelta, None]:
        """A session's events after `after` and then live ones, with the model's text deltas; a
        dropped connection is resumed from the last event seen (nothing missed, nothing twice).
        Endless: break out (inside `contextlib.aclosing`) when done."""
        cursor = _Cursor(after, attempts)
        path = f"/v1/sessions/{_seg(session_id)}/events/stream"
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 45.0))  # keep-alives come every 15 s
        while True:
            try:
                async with self._http.stream(
                    "GET", path, headers=cursor.headers(), timeout=timeout
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise problem_error(response)
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        message = parser.feed(line)
                        item = cursor.take(message) if message is not None else None
                        if item is not None:
                            yield item
                error: AgentlogError = ApiUnreachable(self.base_url, EOFError("the stream ended"))
            except httpx.TransportError as exc:
                error = ApiUnreachable(self.base_url, exc)
            except AgentlogError as exc:
                error = exc
            await asyncio.sleep(cursor.failed(error))

    async def run(self, prompt: str, *, idempotency_key: str | None = None, **options: Any) -> AgentRunResult:
        """One prompt, the final answer (`model`, `system`, `tools`, `timeout_s`); 504 as AgentlogError."""
        return await self._drive(_run(prompt, idempotency_key, options))

    async def approvals(self, session_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """A session's approvals (`status="pending"` for those waiting)."""
        return await self._drive(_approvals(session_id, status))

    async def approve(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Let a waiting tool call run."""
        return await self._drive(_decide(session_id, approval_id, "approve", reason))

    async def deny(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Refuse a waiting tool call; the model is told `reason`."""
        return await self._drive(_decide(session_id, approval_id, "deny", reason))


class Agentlog:
    """The api, synchronously: `with Agentlog(url, token) as client: ...`; the methods of `AsyncAgentlog`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    @classmethod
    def from_stack(
        cls, path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> Self:
        """A client of the api the stack file or the environment names; see `locate`."""
        info = _api_of(path, env)
        return cls(info.api_url or "", info.api_token, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _drive(self, op: _Op[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = self._http.request(
                    step.method,
                    step.path,
                    params=step.params,
                    json=step.body,
                    headers=step.headers,
                    timeout=_timeout(self.timeout, step.timeout),
                )
            except httpx.TransportError as exc:
                op.close()
                raise ApiUnreachable(self.base_url, exc) from exc

    def create_session(self, **settings: Any) -> SessionView:
        """See `AsyncAgentlog.create_session`."""
        return self._drive(_create_session(settings))

    def send(
        self,
        session_id: str,
        content: str | list[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        **session_settings: Any,
    ) -> TurnAccepted | TurnView:
        """See `AsyncAgentlog.send`."""
        return self._drive(_send(session_id, content, idempotency_key, wait, session_settings))

    def wait_for_turn(self, session_id: str, turn_id: str, timeout: float = 60) -> TurnView:
        """See `AsyncAgentlog.wait_for_turn`."""
        return self._drive(_wait_for_turn(session_id, turn_id, timeout))

    def turn(self, session_id: str, turn_id: str) -> TurnView:
        """One turn as it is now."""
        return self._drive(_get(f"/v1/sessions/{_seg(session_id)}/turns/{_seg(turn_id)}", TurnView))

    def session(self, session_id: str) -> SessionView:
        """A session: its messages and metadata."""
        return self._drive(_get(f"/v1/sessions/{_seg(session_id)}", SessionView))

    def sessions_page(
        self, status: str | None = None, limit: int = 50, after: str | None = None
    ) -> SessionPage:
        """See `AsyncAgentlog.sessions_page`."""
        return self._drive(
            _get("/v1/sessions", SessionPage, {"status": status, "limit": limit, "after": after})
        )

    def sessions(self, status: str | None = None, limit: int = 50) -> Iterator[SessionSummary]:
        """Every session of the caller, fetched `limit` at a time."""
        after: str | None = None
        while True:
            page = self.sessions_page(status, limit, after)
            yield from page.data
            if not page.has_more or page.last_id is None:
                return
            after = page.last_id

    def delete(self, session_id: str) -> None:
        """See `AsyncAgentlog.delete`."""
        self._drive(_delete(session_id))

    def events_page(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        """One page of a session's events after sequence number `after`."""
        path = f"/v1/sessions/{_seg(session_id)}/events"
        return self._drive(_get(path, EventPage, {"after": after, "limit": limit}))

    def events(self, session_id: str, after: int = 0, limit: int = 100) -> Iterator[EventView]:
        """A session's stored events after `after`, page by page, to the current end."""
        while True:
            page = self.events_page(session_id, after, limit)
            yield from page.data
            if not page.has_more or page.last_id is None:
                return
            after = page.last_id

    def stream(
        self, session_id: str, after: int | None = None, *, attempts: int = 10
    ) -> Generator[EventView | TextDelta, None, None]:
        """See `AsyncAgentlog.stream`; break out inside `contextlib.closing`."""
        cursor = _Cursor(after, attempts)
        path = f"/v1/sessions/{_seg(session_id)}/events/stream"
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 45.0))
        while True:
            try:
                with self._http.stream("GET", path, headers=cursor.headers(), timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        raise problem_error(response)
                    parser = SSEParser()
                    for line in response.iter_lines():
                        message = parser.feed(line)
                        item = cursor.take(message) if message is not None else None
                        if item is not None:
                            yield item
                error: AgentlogError = ApiUnreachable(self.base_url, EOFError("the stream ended"))
            except httpx.TransportError as exc:
                error = ApiUnreachable(self.base_url, exc)
            except AgentlogError as exc:
                error = exc
            time.sleep(cursor.failed(error))

    def run(self, prompt: str, *, idempotency_key: str | None = None, **options: Any) -> AgentRunResult:
        """See `AsyncAgentlog.run`."""
        return self._drive(_run(prompt, idempotency_key, options))

    def approvals(self, session_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """A session's approvals (`status="pending"` for those waiting)."""
        return self._drive(_approvals(session_id, status))

    def approve(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Let a waiting tool call run."""
        return self._drive(_decide(session_id, approval_id, "approve", reason))

    def deny(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Refuse a waiting tool call; the model is told `reason`."""
        return self._drive(_decide(session_id, approval_id, "deny", reason))
