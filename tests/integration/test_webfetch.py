"""WebFetch against a local HTTP(S) server on loopback: conversions, limits, and the address refusals.

No test leaves the machine: every connection is checked to go to a loopback address, and the
refused URLs are refused before any connection is made.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import pytest

from eventstore.settings import Settings
from processors.tools.registry import ToolContext, ToolOutput
from processors.tools.web import WebFetch, address_refusal, html_to_text

HTML = b"""<!doctype html><html><head><title>  A   Test &amp; Page </title>
<style>body { color: red }</style><script>var secret = "<p>do not show</p>";</script></head>
<body><h1>Welcome</h1><p>First   paragraph
   spans lines.</p><noscript>enable scripts</noscript><ul><li>one</li><li>two</li></ul></body></html>"""
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)
LARGE = b"0123456789" * 500
ALLOW_LOOPBACK = Settings(webfetch_allow_hosts=["127.0.0.1"])


class Server(ThreadingHTTPServer):
    """Records the paths asked for; `stop` ends the slow handlers early."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []
        self.stop = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out leave broken pipes behind; that is expected here


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str | None, **headers: str) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.reply(302, b"", "text/plain", Location=location)

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        port = self.server.port
        if self.path == "/html":
            self.reply(200, HTML, "text/html; charset=utf-8")
        elif self.path == "/json":
            self.reply(200, json.dumps({"answer": 42, "items": ["a", "b"]}).encode(), "application/json")
        elif self.path == "/text":
            self.reply(200, "plain text, café".encode(), "text/plain; charset=utf-8")
        elif self.path == "/untyped":
            self.reply(200, b"no content type here", None)
        elif self.path == "/large":
            self.reply(200, LARGE, "text/plain")
        elif self.path == "/binary":
            self.reply(200, PNG, "image/png")
        elif self.path == "/host":
            self.reply(200, f"Host: {self.headers['Host']}".encode(), "text/plain")
        elif self.path.startswith("/redirect/"):
            left = int(self.path.rsplit("/", 1)[1])
            if left:
                self.redirect(f"/redirect/{left - 1}")
            else:
                self.reply(200, b"landed", "text/plain")
        elif self.path == "/to-metadata":
            self.redirect("http://169.254.169.254/latest/meta-data/")
        elif self.path == "/to-localhost":
            self.redirect(f"http://localhost:{port}/text")
        elif self.path == "/to-file":
            self.redirect("file:///etc/passwd")
        elif self.path == "/slow":
            self.server.stop.wait(5)
            self.reply(200, b"too late", "text/plain")
        elif self.path == "/slow-body":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):  # a byte every 50 ms: each read is quick, the whole is not
                if self.server.stop.wait(0.05):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
        else:
            self.reply(
                404, b"<html><title>Not Found</title><body><p>no such page</p></body></html>", "text/html"
            )


def serve(server: Server) -> Iterator[Server]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from serve(Server())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, ssl.SSLContext]]:
    """An HTTPS server whose certificate names `pinned.test`, and a client context that trusts it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=pinned.test",
         "-addext", "subjectAltName=DNS:pinned.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    https = Server()
    https.socket = server_context.wrap_socket(https.socket, server_side=True)
    for running in serve(https):
        yield running, ssl.create_default_context(cafile=str(cert))


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses WebFetch connects to; a connection off loopback fails the test."""
    seen: list[str] = []
    original = httpcore.AnyIOBackend.connect_tcp

    async def guarded(
        self: httpcore.AnyIOBackend, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        assert ipaddress.ip_address(host).is_loopback, f"a test tried to connect to {host}"
        seen.append(host)
        return await original(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", guarded)
    return seen


Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]


class FakeDNS:
    """Answers for names under .test; everything else goes to the real resolver (numeric forms)."""

    def __init__(self, real: Resolver) -> None:
        self.real = real
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        if not host.endswith(".test"):
            return await self.real(host, port, **kwargs)
        if not self.answers.get(host):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in self.answers[host]
        ]


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    loop = asyncio.get_running_loop()
    fake = FakeDNS(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", fake)
    return fake


async def fetch(url: str, settings: Settings = ALLOW_LOOPBACK, tool: WebFetch | None = None) -> ToolOutput:
    return await (tool or WebFetch()).run({"url": url}, ToolContext("s1", Path("."), settings))


def text(output: ToolOutput) -> str:
    assert isinstance(output.content, str)
    return output.content


def test_definition() -> None:
    tool = WebFetch()
    assert tool.name == "WebFetch"
    assert tool.effect_class({"url": "https://example.com/"}) == "fetch"
    assert tool.input_schema["required"] == ["url"]
    assert tool.input_schema["properties"]["url"] == {
        "type": "string",
        "format": "uri",
        "description": "the http or https URL to fetch",
    }


async def test_html_becomes_readable_text_with_the_title_first(server: Server) -> None:
    out = await fetch(f"http://127.0.0.1:{server.port}/html")
    assert not out.is_error
    header, body = text(out).split("\n\n", 1)
    assert header == f"URL: http://127.0.0.1:{server.port}/html (status 200, text/html, {len(HTML)} bytes)"
    assert body.startswith("Title: A Test & Page\n\n# Welcome\n\nFirst paragraph spans lines.")
    assert "- one\n- two" in body
    for hidden in ("color: red", "secret", "do not show", "enable scripts"):
        assert hidden not in body


async def test_json_and_text_are_returned_as_they_are(server: Server) -> None:
    out = await fetch(f"http://127.0.0.1:{server.port}/json")
    assert not out.is_error
    header, body = text(out).split("\n\n", 1)
    assert "(status 200, application/json," in header
    assert json.loads(body) == {"answer": 42, "items": ["a", "b"]}
    out = await fetch(f"http://127.0.0.1:{server.port}/text")
    assert not out.is_error and text(out).endswith("\n\nplain text, café")
    out = await fetch(f"http://127.0.0.1:{server.port}/untyped")
    assert not out.is_error and "no content-type" in text(out) and text(out).endswith("no content type here")


async def test_a_large_body_is_truncated_with_a_note(server: Server) -> None:
    settings = Settings(webfetch_allow_hosts=["127.0.0.1"], webfetch_max_bytes=1000)
    out = await fetch(f"http://127.0.0.1:{server.port}/large", settings)
    assert not out.is_error
    header, body, note = text(out).split("\n\n")
    assert header.endswith("(status 200, text/plain, 1000 bytes, truncated)")
    assert body == LARGE[:1000].decode()
    assert note.startswith("[truncated:")


async def test_binary_content_is_described_not_returned(server: Server) -> None:
    out = await fetch(f"http://127.0.0.1:{server.port}/binary")
    assert out.is_error
    assert f"image/png, {len(PNG)} bytes" in text(out)
    assert "PNG" not in text(out) and "IHDR" not in text(out)


async def test_an_error_status_is_an_error_result_with_an_excerpt(server: Server) -> None:
    out = await fetch(f"http://127.0.0.1:{server.port}/missing")
    assert out.is_error
    assert "(status 404, text/html," in text(out)
    assert "HTTP 404 Not Found" in text(out) and "no such page" in text(out)


async def test_redirects_are_followed_up_to_five(server: Server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    out = await fetch(f"{base}/redirect/5")
    assert not out.is_error
    assert text(out).startswith(f"URL: {base}/redirect/0 (status 200, text/plain, 6 bytes)\n")
    assert f"Redirected from: {base}/redirect/5" in text(out) and text(out).endswith("landed")
    out = await fetch(f"{base}/redirect/6")
    assert out.is_error and "too many redirects" in text(out)


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ("/to-metadata", "169.254.169.254 (link-local)"),
        ("/to-localhost", "localhost resolves to"),
        ("/to-file", "/etc/passwd: only http and https"),
    ],
)
async def test_every_redirect_hop_is_checked(
    server: Server, connects: list[str], path: str, refused: str
) -> None:
    out = await fetch(f"http://127.0.0.1:{server.port}{path}")
    assert out.is_error and refused in text(out)
    assert server.hits[-1] == path  # only the first hop reached a server
    assert connects == ["127.0.0.1"]


async def test_loopback_is_refused_without_the_allowlist(server: Server, connects: list[str]) -> None:
    hits = len(server.hits)
    for url in (f"http://127.0.0.1:{server.port}/text", f"http://localhost:{server.port}/text"):
        out = await fetch(url, Settings())
        assert out.is_error and "(loopback)" in text(out)
    assert len(server.hits) == hits and connects == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "localhost", "[::1]"]
)
async def test_the_allowlist_matches_the_host_as_written(server: Server, host: str) -> None:
    out = await fetch(f"http://{host}:{server.port}/text")  # 127.0.0.1 is allowed, not these spellings
    assert out.is_error and "refused" in text(out)


REFUSED = [
    "http://localhost/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://0177.0.0.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "https://127.0.0.1/",
    "file:///etc/passwd",
    "ftp://x/",
    "gopher://127.0.0.1:70/_GET%20/",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "http:///no-host",
    "not a url",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_refused_urls(url: str, connects: list[str]) -> None:
    out = await fetch(url, Settings())
    assert out.is_error and text(out).startswith("WebFetch: ")
    assert connects == []


async def test_every_resolved_address_is_checked(dns: FakeDNS, connects: list[str]) -> None:
    dns.answers["evil.test"] = ["127.0.0.1"]
    dns.answers["mixed.test"] = ["93.184.216.34", "10.0.0.1"]
    out = await fetch("http://evil.test/", Settings())
    assert out.is_error and "evil.test resolves to 127.0.0.1 (loopback)" in text(out)
    out = await fetch("http://mixed.test/", Settings())
    assert out.is_error and "mixed.test resolves to 10.0.0.1 (private)" in text(out)
    assert connects == []


async def test_an_unresolvable_name_is_an_error_result(dns: FakeDNS) -> None:
    out = await fetch("http://nowhere.test/", Settings())
    assert out.is_error and "cannot resolve nowhere.test" in text(out)


async def test_http_connects_to_the_checked_address_with_the_host_header(
    server: Server, dns: FakeDNS, connects: list[str]
) -> None:
    dns.answers["pinned.test"] = ["127.0.0.1"]
    out = await fetch(
        f"http://pinned.test:{server.port}/host", Settings(webfetch_allow_hosts=["pinned.test"])
    )
    assert not out.is_error and text(out).endswith(f"Host: pinned.test:{server.port}")
    assert dns.asked.count("pinned.test") == 1  # resolved once, for the check; never again
    assert connects == ["127.0.0.1"]


async def test_https_is_pinned_and_verified_against_the_url_host(
    tls: tuple[Server, ssl.SSLContext], dns: FakeDNS, connects: list[str]
) -> None:
    https, trust = tls
    dns.answers["pinned.test"] = ["127.0.0.1"]
    tool = WebFetch(ssl_context=trust)
    settings = Settings(webfetch_allow_hosts=["pinned.test", "127.0.0.1"])
    out = await fetch(f"https://pinned.test:{https.port}/text", settings, tool)
    assert not out.is_error and text(out).endswith("plain text, café")
    assert dns.asked.count("pinned.test") == 1 and connects == ["127.0.0.1"]
    # The certificate names pinned.test, not the address connected to.
    out = await fetch(f"https://127.0.0.1:{https.port}/text", settings, tool)
    assert out.is_error and "ConnectError" in text(out)


async def test_network_failures_are_error_results(server: Server) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    out = await fetch(f"http://127.0.0.1:{closed}/")
    assert out.is_error and "ConnectError" in text(out)
    out = await fetch(f"https://127.0.0.1:{server.port}/text")  # TLS to a plain HTTP server
    assert out.is_error and "ConnectError" in text(out)


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
async def test_the_whole_fetch_has_a_time_limit(server: Server, path: str) -> None:
    settings = Settings(webfetch_allow_hosts=["127.0.0.1"], webfetch_timeout_s=0.3)
    out = await fetch(f"http://127.0.0.1:{server.port}{path}", settings)
    assert out.is_error and "timed out after 0.3 s" in text(out)


@pytest.mark.parametrize("tool_input", [{}, {"url": 3}, {"url": "  "}])
async def test_bad_input_is_an_error_result(tool_input: dict[str, Any]) -> None:
    out = await WebFetch().run(tool_input, ToolContext("s1", Path("."), Settings()))
    assert out.is_error and "needs a string `url`" in text(out)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("2002:808:808::1", None),  # 6to4 of a public address
        ("64:ff9b::808:808", None),  # NAT64 of a public address
        ("127.0.0.53", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not globally routable"),
        ("240.0.0.1", "private"),
        ("239.255.255.250", "multicast"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private, as IPv4-mapped 10.0.0.1"),
        ("2002:7f00:1::", "loopback, as 6to4 127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "link-local, as NAT64 169.254.169.254"),
        ("::7f00:1", "reserved"),  # IPv4-compatible, deprecated
        ("::ffff:8.8.8.8", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "private, as Teredo client 192.0.2.45"),
    ],
)
def test_address_refusal(address: str, reason: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == reason


def test_html_to_text_keeps_words_and_drops_markup() -> None:
    page = "<p>a&nbsp;b <b>bold</b><br>next</p><table><tr><td>1</td><td>2</td></tr></table>"
    page += "<svg><title>x</title></svg>"
    assert html_to_text(page) == "a b bold\nnext\n\n1 2"
