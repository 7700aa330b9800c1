"""The fake Anthropic Messages API server: loopback HTTP from a daemon thread, answering
`/v1/messages` (JSON or SSE) and `/v1/messages/count_tokens` with scripted or default replies,
after an optional fixed latency (`python -m agentlog.fake_anthropic --help`)."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from agentlog.fake_anthropic.replies import (
    Reply,
    Scripted,
    default_reply,
    error_body,
    estimate_tokens,
    message_json,
    new_id,
    sized,
    sse_frame,
    stream_events,
)


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
            self.server.fake._stopping.wait(self.server.fake.latency_s)
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
        # The latency is spread over the events, as a model streams its answer over its time.
        pause = self.server.fake.latency_s / len(events)
        for event in events:
            if pause:
                self.server.fake._stopping.wait(pause)
            self._chunk(sse_frame(event))
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
    # A load test opens a hundred connections at once; the default backlog of 5 would drop
    # SYNs and add the kernel's one-second retransmit to the measured latency.
    request_queue_size = 256

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

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_s: float = 0.0,
        default: Scripted | None = None,
    ) -> None:
        self.default: Scripted = default or default_reply
        # Every message reply (not errors, not hangs) takes this long, as a model would.
        self.latency_s = latency_s
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


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted, printing the base URL first (for load tests and manual runs)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0, help="time each message reply takes")
    sizes = parser.add_argument_group("usage of every reply (default: estimated from the request)")
    for name in ("input", "output", "cache-read", "cache-write"):
        sizes.add_argument(f"--{name}-tokens", type=int, metavar="N")
    args = parser.parse_args(argv)
    tokens = (args.input_tokens, args.output_tokens, args.cache_read_tokens, args.cache_write_tokens)
    default = sized(*(n or 0 for n in tokens)) if any(n is not None for n in tokens) else None
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    with FakeAnthropic(args.host, args.port, latency_s=args.latency_ms / 1000, default=default) as fake:
        print(fake.base_url, flush=True)
        try:
            stopping.wait()
        except KeyboardInterrupt:
            pass
