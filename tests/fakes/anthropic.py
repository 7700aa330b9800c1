"""A fake Anthropic Messages API on loopback, for tests, benchmarks and worker subprocesses.

It serves `POST /v1/messages` (JSON, or SSE when the body asks for `"stream": true`) and
`POST /v1/messages/count_tokens` from a daemon thread, so it needs no event loop. Replies
are scripted (`script(...)`, consumed in order) or made by `default(request_json)`.

    with FakeAnthropic() as fake:
        fake.script(tool_use(("get_weather", {"city": "Paris"})), text("Sunny."))
        client = AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=0)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from eventstore.events import StopReason

Block = dict[str, Any]
Kind = Literal["message", "error", "hang", "cut", "short", "stream_error"]

STOP_REASONS: tuple[str, ...] = get_args(StopReason)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an assistant message, an HTTP error, a hang or a cut connection."""

    kind: Kind = "message"
    content: tuple[Block, ...] = ()
    stop_reason: str | None = "end_turn"
    stop_sequence: str | None = None
    usage: dict[str, int] | None = None  # None: estimated from the request and the content
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


Scripted = Reply | Callable[[dict[str, Any]], Reply]

# -- reply helpers ---------------------------------------------------------------------------------------


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> dict[str, int]:
    """A usage record for a reply."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }


def text_block(text: str) -> Block:
    """A text content block."""
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: dict[str, Any], id: str | None = None) -> Block:
    """A tool_use content block with a fresh `toolu_` id unless one is given."""
    return {"type": "tool_use", "id": id or new_id("toolu_"), "name": name, "input": input}


def thinking_block(thinking: str, signature: str | None = None) -> Block:
    """A thinking content block with its signature (a made-up one unless given)."""
    sig = signature if signature is not None else "sig_" + uuid.uuid4().hex * 2
    return {"type": "thinking", "thinking": thinking, "signature": sig}


def message(
    *blocks: Block,
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
    usage: dict[str, int] | None = None,
) -> Reply:
    """An assistant message made of any blocks, known or not."""
    return Reply(content=blocks, stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage)


def text(text: str, stop_reason: str = "end_turn", usage: dict[str, int] | None = None) -> Reply:
    """A text reply."""
    return message(text_block(text), stop_reason=stop_reason, usage=usage)


def tool_use(*calls: tuple[str, dict[str, Any]], usage: dict[str, int] | None = None) -> Reply:
    """One or more (parallel) tool_use blocks, stop_reason `tool_use`."""
    return message(*(tool_use_block(name, args) for name, args in calls), stop_reason="tool_use", usage=usage)


def thinking(thought: str, answer: Reply, signature: str | None = None) -> Reply:
    """`answer` preceded by a signed thinking block."""
    return replace(answer, content=(thinking_block(thought, signature), *answer.content))


def stop(reason: str, text: str = "Partial answer") -> Reply:
    """A text reply that ends with `reason` (`stop_sequence` also reports the sequence `###`)."""
    if reason not in STOP_REASONS:
        raise ValueError(f"unknown stop reason {reason!r}")
    sequence = "###" if reason == "stop_sequence" else None
    return message(text_block(text), stop_reason=reason, stop_sequence=sequence)


def error(status: int, type: str, message: str, retry_after: float | str | None = None) -> Reply:
    """An HTTP error in the API's shape; `retry_after` becomes the `retry-after` header."""
    headers = () if retry_after is None else (("retry-after", _header_value(retry_after)),)
    return Reply(kind="error", status=status, error_type=type, error_message=message, headers=headers)


def rate_limited(retry_after: float | str = 1) -> Reply:
    """429 rate_limit_error with a retry-after header."""
    message = "Number of request tokens has exceeded your rate limit."
    return error(429, "rate_limit_error", message, retry_after)


def overloaded() -> Reply:
    """529 overloaded_error."""
    return error(529, "overloaded_error", "Overloaded")


def server_error() -> Reply:
    """500 api_error."""
    return error(500, "api_error", "Internal server error")


def invalid_request(message: str = "messages: at least one message is required") -> Reply:
    """400 invalid_request_error."""
    return error(400, "invalid_request_error", message)


def stream_error(type: str = "overloaded_error", message: str = "Overloaded") -> Reply:
    """An `error` event after message_start (streaming); as JSON, the matching HTTP error."""
    return Reply(kind="stream_error", status=529, error_type=type, error_message=message)


def hang(seconds: float) -> Reply:
    """Hold the connection for `seconds` without answering, then close it."""
    return Reply(kind="hang", seconds=seconds)


def cut(text: str = "This answer will be cut off before it ends") -> Reply:
    """Close the connection mid-message: after a few SSE events, or inside the JSON body."""
    return Reply(kind="cut", content=(text_block(text),))


def short_stream(text: str = "This stream ends politely, but too soon") -> Reply:
    """A stream that ends cleanly (a complete HTTP body) before message_delta and message_stop."""
    return Reply(kind="short", content=(text_block(text),))


def default_reply(request: dict[str, Any]) -> Reply:
    """The reply when nothing is scripted: a short end_turn text."""
    return text("Hello from the fake model.")


# -- wire format -----------------------------------------------------------------------------------------

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id in the API's style (`msg_...`, `toolu_...`, `req_...`)."""
    return f"{prefix}01{uuid.uuid4().hex[:16]}{next(_ids):06d}"


def _header_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def estimate_tokens(request: dict[str, Any]) -> int:
    """A deterministic token estimate of a request: its JSON size over four."""
    counted = {k: request.get(k) for k in ("system", "messages", "tools")}
    return max(1, math.ceil(len(json.dumps(counted, sort_keys=True)) / 4))


def _content_tokens(content: tuple[Block, ...]) -> int:
    return max(1, math.ceil(len(json.dumps(list(content))) / 4))


def error_body(type: str, message: str) -> dict[str, Any]:
    """The API's error JSON."""
    return {"type": "error", "error": {"type": type, "message": message}}


def _usage_of(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    base = reply.usage or usage(estimate_tokens(request), _content_tokens(reply.content))
    full: dict[str, Any] = {**usage(), **base}
    full["cache_creation"] = {
        "ephemeral_5m_input_tokens": full["cache_creation_input_tokens"],
        "ephemeral_1h_input_tokens": 0,
    }
    full["service_tier"] = "standard"
    return full


def message_json(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    """The complete Message object for a message reply."""
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-opus-4-8"),
        "content": [dict(b) for b in reply.content],
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": _usage_of(reply, request),
    }


def _pieces(s: str, n: int = 3) -> list[str]:
    size = max(1, math.ceil(len(s) / n))
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _block_events(index: int, block: Block) -> Iterator[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        start: Block = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        pieces = _pieces(json.dumps(block["input"]))
        deltas += [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking and block types the fake does not know arrive whole
        start, deltas = dict(block), []
    yield {"type": "content_block_start", "index": index, "content_block": start}
    for delta in deltas:
        yield {"type": "content_block_delta", "index": index, "delta": delta}
    yield {"type": "content_block_stop", "index": index}


def stream_events(reply: Reply, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The SSE events of a message reply, in the API's order."""
    whole = message_json(reply, request)
    final_usage = whole["usage"]
    start_usage = {**final_usage, "output_tokens": 1}
    yield {
        "type": "message_start",
        "message": {**whole, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage},
    }
    yield {"type": "ping"}
    for index, block in enumerate(whole["content"]):
        yield from _block_events(index, block)
    delta_usage = {k: final_usage[k] for k in usage()}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": whole["stop_sequence"]},
        "usage": delta_usage,
    }
    yield {"type": "message_stop"}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


# -- the server ------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the fake is quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _post(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, error_body("invalid_request_error", "request body is not valid JSON"))
            return
        path = urlsplit(self.path).path.rstrip("/")
        fake = self.server.fake
        if path == "/v1/messages/count_tokens":
            fake._record_count(body)
            self._json(200, {"input_tokens": estimate_tokens(body)})
        elif path == "/v1/messages":
            reply = fake._next(body, dict(self.headers.items()))
            self._answer(reply, body)
        else:
            self._json(404, error_body("not_found_error", f"Not found: {self.path}"))

    def _answer(self, reply: Reply, request: dict[str, Any]) -> None:
        streaming = bool(request.get("stream"))
        if reply.kind == "hang":
            self.server.fake._stopping.wait(reply.seconds)
            self.close_connection = True
        elif reply.kind == "error" or (reply.kind == "stream_error" and not streaming):
            body = error_body(reply.error_type, reply.error_message)
            self._json(reply.status, body, dict(reply.headers))
        elif not streaming:
            payload = json.dumps(message_json(reply, request)).encode()
            if reply.kind in ("cut", "short"):
                self._head(200, "application/json", {"content-length": str(len(payload))})
                self.wfile.write(payload[: len(payload) // 2])
                self.close_connection = True
            else:
                self._json(200, json.loads(payload))
        else:
            self._stream(reply, request)

    def _stream(self, reply: Reply, request: dict[str, Any]) -> None:
        self._head(200, "text/event-stream", {"transfer-encoding": "chunked", "cache-control": "no-cache"})
        events = list(stream_events(reply, request))
        if reply.kind in ("cut", "short"):
            events = events[:4]  # message_start, ping, content_block_start, one delta
        elif reply.kind == "stream_error":
            events = [*events[:2], error_body(reply.error_type, reply.error_message)]
        for event in events:
            self._chunk(_sse(event))
        if reply.kind == "cut":
            self.close_connection = True  # no terminating chunk: the body is incomplete
            return
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _head(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("request-id", new_id("req_"))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self._head(status, "application/json", {**(headers or {}), "content-length": str(len(payload))})
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeAnthropic, host: str, port: int) -> None:
        self.fake = fake
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up is normal here (timeouts, cuts); anything else is a fake bug.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


@dataclass
class _State:
    queue: deque[Scripted] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    count_requests: list[dict[str, Any]] = field(default_factory=list)


class FakeAnthropic:
    """The fake API server: a context manager that starts it on 127.0.0.1 and a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.default: Callable[[dict[str, Any]], Reply] = default_reply
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._state = _State()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeAnthropic:
        """Start serving in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self, self._host, self._port)
        server = self._server
        # A short poll keeps stop() quick: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; release hanging replies and close open connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, for the SDK's `base_url` or ANTHROPIC_BASE_URL."""
        if self._server is None:
            raise RuntimeError("the fake Anthropic server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received on /v1/messages, in order (a copy)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of those requests, in order (a copy)."""
        with self._lock:
            return list(self._state.headers)

    @property
    def count_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received on /v1/messages/count_tokens (a copy)."""
        with self._lock:
            return list(self._state.count_requests)

    @property
    def calls(self) -> int:
        """How many /v1/messages requests arrived."""
        with self._lock:
            return len(self._state.requests)

    def script(self, *replies: Scripted) -> None:
        """Queue replies, consumed in order by the next /v1/messages requests."""
        with self._lock:
            self._state.queue.extend(replies)

    def reset(self) -> None:
        """Forget the script, the recorded requests and a custom default."""
        with self._lock:
            self._state = _State()
            self.default = default_reply

    def _next(self, request: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self._state.requests.append(request)
            self._state.headers.append(headers)
            scripted = self._state.queue.popleft() if self._state.queue else self.default
        return scripted if isinstance(scripted, Reply) else scripted(request)

    def _record_count(self, request: dict[str, Any]) -> None:
        with self._lock:
            self._state.count_requests.append(request)

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)


def main() -> None:
    """Serve the default reply until interrupted (for benchmarks and manual runs)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeAnthropic(args.host, args.port) as fake:
        print(fake.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
