"""WebFetch: fetch a URL for the model and return it as text, never from a private address.

Each hop (the URL, then every redirect) is resolved once and every resolved address is
checked; the connection then goes only to those checked addresses (a pinned network
backend under httpx), so a DNS answer cannot change between the check and the connect.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any, ClassVar, Literal

import httpcore
import httpx

from eventstore.settings import Settings
from processors.tools.registry import EffectClass, ToolContext, ToolOutput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_BYTES = 64_000
_EXCERPT_CHARS = 500
_HEADERS = {
    "User-Agent": "agentlog-webfetch/0.1",
    "Accept": "text/html,application/xhtml+xml,text/plain,application/json;q=0.9,*/*;q=0.5",
    # No compression: the size cap then bounds what is held in memory (no gzip bombs).
    "Accept-Encoding": "identity",
}
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/yaml", "application/toml"}
)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
# Checked in this order, so that the most telling name is given for an address.
_CHECKS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_private", "private"),
    ("is_reserved", "reserved"),
)


class _Failure(Exception):
    """A fetch that cannot go on; the message is written for the model."""


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` must not be fetched ("loopback", "private", ...), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        for form, inner in _embedded_ipv4(address):
            reason = address_refusal(inner)
            if reason is not None:
                return f"{reason}, as {form} {inner}"
        if address.ipv4_mapped is not None or any(address in network for network in _NAT64):
            return None  # a translation of a public IPv4 address (the prefixes count as reserved)
        if address.is_site_local:
            return "site-local"
    for attribute, reason in _CHECKS:
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): traffic may go there."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        found += [("Teredo server", address.teredo[0]), ("Teredo client", address.teredo[1])]
    if any(address in network for network in _NAT64):
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _canonical_host(host: str) -> str:
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _allowlisted(host: str, settings: Settings) -> bool:
    """Whether the host as written in the URL (a name, or an IP in its usual form) is exempt."""
    canonical = _canonical_host(host)
    return any(_canonical_host(entry) == canonical for entry in settings.webfetch_allow_hosts)


async def _checked_addresses(url: httpx.URL, settings: Settings) -> tuple[str, int, list[str]]:
    """Resolve the URL's host once and check every address: (host, port, addresses to connect to)."""
    if url.scheme not in ("http", "https"):
        raise _Failure(f"refused {url}: only http and https URLs are fetched")
    host = url.raw_host.decode("ascii").lower()
    if not host:
        raise _Failure(f"refused {url}: the URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _Failure(f"cannot resolve {host} ({url}): {exc}") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise _Failure(f"{host} has no IP address ({url})")
    if not _allowlisted(host, settings):
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                where = (
                    f"{address}" if _canonical_host(host) == str(address) else f"{host} resolves to {address}"
                )
                raise _Failure(
                    f"refused {url}: {where} ({reason}); WebFetch does not fetch loopback, private, "
                    "link-local or other non-public addresses"
                )
    return host, port, [str(address) for address in addresses]


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to the addresses checked for a (host, port); never resolves a name itself.

    TLS still uses the URL's host name (httpcore passes it for SNI and certificate checks),
    so https is pinned as well as http.
    """

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.pins: dict[tuple[str, int], list[str]] = {}

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self.pins.get((host.lower(), port))
        if not addresses:
            raise httpcore.ConnectError(f"{host}:{port} was not checked before connecting")
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue
        return await self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("WebFetch does not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _HTMLText(HTMLParser):
    """Collects a page's title and its readable text; scripts, styles and the like are dropped."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
    _BLOCKS = frozenset(
        "address article aside blockquote br dd div dl dt fieldset figcaption figure footer form header "
        "hr main nav ol p pre section table tbody thead tfoot tr ul".split()
    )
    _HEADINGS: ClassVar[dict[str, int]] = {f"h{n}": n for n in range(1, 7)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.parts: list[str] = []
        self._skip = 0
        self._in_title = False
        self._seen_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title" and not self._seen_title:
            self._in_title = True
        elif tag in self._HEADINGS:
            self.parts.append("\n\n" + "#" * self._HEADINGS[tag] + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title" and self._in_title:
            self._in_title, self._seen_title = False, True
        elif tag in self._BLOCKS or tag in self._HEADINGS:
            self.parts.append("\n\n" if tag == "p" or tag in self._HEADINGS else "\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        text = re.sub(r"\s+", " ", data)
        (self.title if self._in_title else self.parts).append(text)


def html_to_text(html: str) -> str:
    """Readable text of an HTML page: `Title: ...` first, then the body with whitespace collapsed."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines: list[str] = []
    for line in "".join(parser.parts).split("\n"):
        line = re.sub(r"[ \t\f\v\r]+", " ", line).strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    body = "\n".join(lines).strip()
    title = re.sub(r"\s+", " ", "".join(parser.title)).strip()
    return f"Title: {title}\n\n{body}" if title else body


def _kind(media_type: str, body: bytes) -> Literal["html", "text", "binary"]:
    if media_type in _HTML_TYPES:
        return "html"
    if media_type.startswith("text/") or media_type in _TEXT_TYPES or media_type.endswith(("+json", "+xml")):
        return "text"
    if not media_type and b"\0" not in body[:4096]:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(body[:4096], final=False)
        except UnicodeDecodeError:
            return "binary"
        return "html" if body[:512].lstrip().lower().startswith((b"<!doctype html", b"<html")) else "text"
    return "binary"


def _decode(body: bytes, charset: str | None) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    return body.decode(codec, errors="replace")


async def _read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decoded) body, and whether there was more."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > limit:
            body += chunk[: limit - len(body)]
            return bytes(body), True
        body += chunk
    return bytes(body), False


async def _result(response: httpx.Response, settings: Settings, redirected_from: str | None) -> ToolOutput:
    """The tool result for a final (non-redirect) response."""
    ok = 200 <= response.status_code < 300
    limit = settings.webfetch_max_bytes if ok else min(settings.webfetch_max_bytes, _ERROR_BODY_BYTES)
    body, truncated = await _read_body(response, limit)
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = _kind(media_type, body)
    size = f"{len(body)} bytes" + (", truncated" if truncated else "")
    header = f"URL: {response.url} (status {response.status_code}, {media_type or 'no content-type'}, {size})"
    if redirected_from is not None:
        header += f"\nRedirected from: {redirected_from}"
    text = ""
    if kind != "binary":
        text = _decode(body, response.charset_encoding)
        text = html_to_text(text) if kind == "html" else text
    if not ok:
        reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        if kind == "binary":
            excerpt = "the body is binary and not shown"
        elif not text.strip():
            excerpt = "the body is empty"
        else:
            cut = "…" if len(text) > _EXCERPT_CHARS else ""
            excerpt = f"the body begins:\n{text[:_EXCERPT_CHARS].strip()}{cut}"
        return ToolOutput(f"{header}\n\n{reason}; {excerpt}", is_error=True)
    if kind == "binary":
        note = f"Binary content ({media_type or 'unknown type'}, {size}) is not shown: WebFetch returns text."
        return ToolOutput(f"{header}\n\n{note}", is_error=True)
    if truncated:
        text += f"\n\n[truncated: the body is longer than {limit} bytes; only the first {limit} are shown]"
    return ToolOutput(f"{header}\n\n{text}")


class WebFetch:
    """Fetches an http(s) URL from a public address and returns it as text for the model."""

    name = "WebFetch"
    uses_workspace = False
    description = (
        "Fetches a URL and returns its content as text. HTML pages are converted to readable text "
        "(the title first); plain text and JSON are returned as they are; binary content is not "
        f"returned. Only http and https URLs on public addresses; up to {MAX_REDIRECTS} redirects are "
        "followed. The first line of the result gives the final URL, the status, the content type and "
        "the size; long bodies are truncated."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "the http or https URL to fetch"}
        },
        "required": ["url"],
    }

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context` verifies servers (default: the certifi CAs, as httpx does)."""
        self._ssl_context = ssl_context

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "fetch"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        url = tool_input.get("url")
        if not isinstance(url, str) or not url.strip():
            return ToolOutput("WebFetch needs a string `url` input", is_error=True)
        timeout_s = ctx.settings.webfetch_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self._fetch(url.strip(), ctx.settings)
        except _Failure as exc:
            return ToolOutput(f"WebFetch: {exc}", is_error=True)
        except (TimeoutError, httpx.TimeoutException):
            return ToolOutput(f"WebFetch {url}: timed out after {timeout_s:g} s", is_error=True)
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return ToolOutput(f"WebFetch {url}: {type(exc).__name__}: {exc}", is_error=True)

    async def _fetch(self, url_text: str, settings: Settings) -> ToolOutput:
        try:
            url = httpx.URL(url_text)
        except httpx.InvalidURL as exc:
            raise _Failure(f"not a valid URL: {url_text}: {exc}") from exc
        backend = _PinnedBackend()
        async with self._client(backend, settings) as client:
            for hop in range(MAX_REDIRECTS + 1):
                host, port, addresses = await _checked_addresses(url, settings)
                backend.pins[(host, port)] = addresses
                async with client.stream("GET", url) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECT_STATUSES and location:
                        url = url.join(location).copy_with(fragment=None)
                        continue
                    return await _result(response, settings, url_text if hop else None)
        raise _Failure(f"{url_text}: too many redirects (more than {MAX_REDIRECTS}); the last was to {url}")

    def _client(self, backend: _PinnedBackend, settings: Settings) -> httpx.AsyncClient:
        """A client for one fetch: no proxies or environment (a proxy would bypass the address check)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(trust_env=False)
        transport = httpx.AsyncHTTPTransport(verify=self._ssl_context, trust_env=False)
        # httpx has no public hook for the network backend: swap in a pool that connects through ours.
        transport._pool = httpcore.AsyncConnectionPool(ssl_context=self._ssl_context, network_backend=backend)
        return httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.webfetch_timeout_s),
            headers=_HEADERS,
        )
