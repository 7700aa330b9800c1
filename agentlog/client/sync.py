"""`Agentlog`: the api synchronously, over `httpx.Client`; the methods of `AsyncAgentlog`, driving
the same calls of `ops`."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx

from agentlog.client import ops
from agentlog.client.errors import AgentlogError, ApiUnreachable, problem_error
from agentlog.client.sse import Cursor, SSEParser, stream_path, stream_timeout
from agentlog.client.stack import DEFAULT_STACK, api_of
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

__all__ = ["Agentlog"]

T = TypeVar("T")


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
            base_url=self.base_url, headers=ops.headers(token), timeout=timeout, transport=transport
        )

    @classmethod
    def from_stack(
        cls, path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> Self:
        """A client of the api the stack file or the environment names; see `locate`."""
        info = api_of(path, env)
        return cls(info.api_url or "", info.api_token, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _drive(self, op: ops.Op[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, ops.Sleep):
                time.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = self._http.request(step.method, step.path, **ops.request_options(step, self.timeout))
            except httpx.TransportError as exc:
                op.close()
                raise ApiUnreachable(self.base_url, exc) from exc

    def create_session(self, **settings: Any) -> SessionView:
        """See `AsyncAgentlog.create_session`."""
        return self._drive(ops.create_session(settings))

    def fork(self, session_id: str, /, **settings: Any) -> SessionView:
        """See `AsyncAgentlog.fork`."""
        return self._drive(ops.fork(session_id, settings))

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
        return self._drive(ops.send(session_id, content, idempotency_key, wait, session_settings))

    def wait_for_turn(self, session_id: str, turn_id: str, timeout: float = 60) -> TurnView:
        """See `AsyncAgentlog.wait_for_turn`."""
        return self._drive(ops.wait_for_turn(session_id, turn_id, timeout))

    def turn(self, session_id: str, turn_id: str) -> TurnView:
        """One turn as it is now."""
        return self._drive(ops.turn(session_id, turn_id))

    def session(self, session_id: str) -> SessionView:
        """A session: its messages and metadata."""
        return self._drive(ops.session(session_id))

    def sessions_page(
        self, status: str | None = None, limit: int = 50, after: str | None = None
    ) -> SessionPage:
        """See `AsyncAgentlog.sessions_page`."""
        return self._drive(ops.sessions_page(status, limit, after))

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
        self._drive(ops.delete(session_id))

    def events_page(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        """One page of a session's events after sequence number `after`."""
        return self._drive(ops.events_page(session_id, after, limit))

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
        cursor = Cursor(after, attempts)
        path, timeout = stream_path(session_id), stream_timeout(self.timeout)
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
        return self._drive(ops.run(prompt, idempotency_key, options))

    def approvals(self, session_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """A session's approvals (`status="pending"` for those waiting)."""
        return self._drive(ops.approvals(session_id, status))

    def approve(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Let a waiting tool call run."""
        return self._drive(ops.decide(session_id, approval_id, "approve", reason))

    def deny(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Refuse a waiting tool call; the model is told `reason`."""
        return self._drive(ops.decide(session_id, approval_id, "deny", reason))
