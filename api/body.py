"""The request body limit, counted on the bytes as they arrive: a `Content-Length` is only a
claim and a chunked body has none. The whole body is read here, up to the limit, before the
app sees the request — before authentication — so no caller, with a token or without, makes
the api hold more than the limit, and a refused body starts nothing (no session, no event)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from api import problems

Message = dict[str, Any]


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 problem+json, unread past
    the limit; a body within it is handed on whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body was whole: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            # The body once, then the client's own messages (a disconnect, for streams).
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            later: Message = await receive()
            return later

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        # No `Connection: close`: the server discards what the client still sends (never held,
        # never given to the app), so a client that sends its whole body still reads this answer
        # instead of a connection reset.
        response = problems.problem_response(
            Request(scope), 413, "Request body too large", f"the limit is {self.limit} bytes"
        )
        await response(scope, receive, send)
