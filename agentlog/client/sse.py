"""Server-sent events for the client: the `text/event-stream` parser, and the cursor that lets a
stream resume after a dropped connection without losing or repeating an event."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agentlog.client.errors import AgentlogError
from agentlog.client.ops import segment
from api.models import EventView, TextDelta

__all__ = ["Cursor", "SSEMessage", "SSEParser", "stream_path", "stream_timeout"]


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


class Cursor:
    """A stream's place: the last sequence seen (sent as Last-Event-ID on reconnecting), so that a
    dropped connection loses and repeats nothing; and how many reconnects failed in a row."""

    def __init__(self, after: int | None, attempts: int) -> None:
        self.last = after
        self.attempts = attempts
        self.failures = 0

    def headers(self) -> dict[str, str]:
        """The headers of the next (re)connection."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        return headers

    def take(self, message: SSEMessage) -> EventView | TextDelta | None:
        """What a message means to the caller: an event not seen before, a text delta, or nothing."""
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


def stream_path(session_id: str) -> str:
    """The path of a session's event stream."""
    return f"/v1/sessions/{segment(session_id)}/events/stream"


def stream_timeout(base: float) -> httpx.Timeout:
    """A stream's timeout: reads wait past the keep-alives, which come every 15 s."""
    return httpx.Timeout(base, read=max(base, 45.0))
