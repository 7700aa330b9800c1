"""`AsyncAgentlog`: the api from asyncio, over `httpx.AsyncClient`; it drives the calls of `ops`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
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

__all__ = ["AsyncAgentlog"]

T = TypeVar("T")


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
            base_url=self.base_url, headers=ops.headers(token), timeout=timeout, transport=transport
        )

    @classmethod
    def from_stack(
        cls, path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> Self:
        """A client of the api the stack file or the environment names; see `locate`."""
        info = api_of(path, env)
        return cls(info.api_url or "", info.api_token, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _drive(self, op: ops.Op[T]) -> T:
        reply: httpx.Response | None = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, ops.Sleep):
                await asyncio.sleep(step.seconds)
                reply = None
                continue
            try:
                reply = await self._http.request(
                    step.method, step.path, **ops.request_options(step, self.timeout)
                )
            except httpx.TransportError as exc:
                op.close()
                raise ApiUnreachable(self.base_url, exc) from exc

    async def create_session(self, **settings: Any) -> SessionView:
        """Create a session: `session_id`, `model`, `system`, `tools`, `approvals`, `ttl_seconds`,
        `policy`, `max_steps`, `token_budget`, `max_tokens`, `context_window`, `metadata` (all optional)."""
        return await self._drive(ops.create_session(settings))

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
        return await self._drive(ops.send(session_id, content, idempotency_key, wait, session_settings))

    async def wait_for_turn(
        self,
        session_id: str,
        turn_id: str,
        timeout: float = 60,  # noqa: ASYNC109 - a poll deadline, the same signature as the sync client's
    ) -> TurnView:
        """The turn once it completed or failed (polling with backoff); TimeoutError after `timeout`."""
        return await self._drive(ops.wait_for_turn(session_id, turn_id, timeout))

    async def turn(self, session_id: str, turn_id: str) -> TurnView:
        """One turn as it is now."""
        return await self._drive(ops.turn(session_id, turn_id))

    async def session(self, session_id: str) -> SessionView:
        """A session: its messages and metadata."""
        return await self._drive(ops.session(session_id))

    async def sessions_page(
        self, status: str | None = None, limit: int = 50, after: str | None = None
    ) -> SessionPage:
        """One page of the caller's sessions in id order (`after` = the previous page's `last_id`)."""
        return await self._drive(ops.sessions_page(status, limit, after))

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

    async def fork(self, session_id: str, /, **settings: Any) -> SessionView:
        """A new session with this one's history (up to `at_seq`, cut to its last finished turn):
        `session_id` of the fork, `at_seq`, and any setting of `create_session`; no model call."""
        return await self._drive(ops.fork(session_id, settings))

    async def delete(self, session_id: str) -> None:
        """Delete a session (asynchronously: it answers 404 once the deletion is projected)."""
        await self._drive(ops.delete(session_id))

    async def events_page(self, session_id: str, after: int = 0, limit: int = 100) -> EventPage:
        """One page of a session's events after sequence number `after`."""
        return await self._drive(ops.events_page(session_id, after, limit))

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
        cursor = Cursor(after, attempts)
        path, timeout = stream_path(session_id), stream_timeout(self.timeout)
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
        return await self._drive(ops.run(prompt, idempotency_key, options))

    async def approvals(self, session_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """A session's approvals (`status="pending"` for those waiting)."""
        return await self._drive(ops.approvals(session_id, status))

    async def approve(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Let a waiting tool call run."""
        return await self._drive(ops.decide(session_id, approval_id, "approve", reason))

    async def deny(self, session_id: str, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        """Refuse a waiting tool call; the model is told `reason`."""
        return await self._drive(ops.decide(session_id, approval_id, "deny", reason))
