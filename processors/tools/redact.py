"""Secret redaction of tool results (DESIGN.md invariant 12): the one place that decides what a
secret is, replacing each with `[REDACTED:<type>]` before a result reaches the ledger, the
log or `tool_outputs`, which are immutable."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.base import BasePlugin, RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector

from eventstore.events import Block


class AWSSecretKeyDetector(RegexBasedDetector):
    """An AWS secret access key as credentials files and environments write it
    (`aws_secret_access_key = …`, unquoted), which detect-secrets' AWS plugin, matching
    quoted values only, misses."""

    secret_type = "AWS Secret Access Key"
    denylist: ClassVar[tuple[re.Pattern[str], ...]] = (
        re.compile(
            r"aws_?secret_?(?:access_?)?key\W{0,3}[=:]\W{0,3}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])", re.I
        ),
    )


# High-signal plugins only: each matches a token format or a key header, so ordinary output
# (hashes, UUIDs, base64 data, lockfile integrity strings) is left alone. Not the entropy
# plugins nor the keyword one: they flag git and sha256 digests, base64 payloads and
# `password = get_password()`, and a redacted digest or file breaks the model's work (it reads
# them back, compares them, and may write the file again).
PLUGINS: tuple[BasePlugin, ...] = (
    AWSKeyDetector(),
    AWSSecretKeyDetector(),
    GitHubTokenDetector(),
    GitLabTokenDetector(),
    PrivateKeyDetector(),
    SlackDetector(),
    StripeDetector(),
    JwtTokenDetector(),
    BasicAuthDetector(),
)

# The text is scanned in windows: the plugins' Python regexes are quadratic on some inputs
# (a long run of "eyJ" for the JWT one), and a window bounds both the time and the GIL held
# per match. A secret shorter than the overlap lies whole in some window.
WINDOW = 4096
OVERLAP = 1024
# A private key is redacted as its whole PEM block (the plugin matches the header only);
# the largest keys (RSA 16384) are about 13 KB; a block with no end within this is cut here.
PEM_MAX = 20_000
_JWT_TAIL = r"[A-Za-z0-9_=+/-]*"
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|Private-MAC: *[0-9a-fA-F]*")


@dataclass(frozen=True)
class Redacted:
    """A text with its secrets replaced, and how many of each type were found."""

    text: str
    found: Counter[str]


def _windows(text: str) -> Iterator[str]:
    if len(text) <= WINDOW:
        yield text
        return
    for start in range(0, len(text), WINDOW - OVERLAP):
        yield text[start : start + WINDOW]
        if start + WINDOW >= len(text):
            return


def _pem_blocks(text: str) -> list[tuple[int, int]]:
    """The spans of private key blocks: header to end line, or PEM_MAX when no end comes."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (begin := _PEM_BEGIN.search(text, position)) is not None:
        end = _PEM_END.search(text, begin.end(), begin.end() + PEM_MAX)
        stop = end.end() if end is not None else min(len(text), begin.start() + PEM_MAX)
        spans.append((begin.start(), stop))
        position = stop
    return spans


def _values(plugin: BasePlugin, text: str) -> Iterator[str]:
    """The secret values a plugin finds. A regex plugin's own `analyze_string` yields a
    pattern's first group when it has one, which for some is the token's prefix ("ghp" of a
    GitHub token): here a group is the secret only when it ends the match (a quoted or URL
    password); otherwise the whole match is."""
    if isinstance(plugin, JwtTokenDetector):
        # Its pattern ends lazily, before the signature: the value runs on to the token's end.
        for value in plugin.analyze_string(text):
            whole = re.search(re.escape(value) + _JWT_TAIL, text)
            yield whole.group(0) if whole is not None else value
        return
    if not isinstance(plugin, RegexBasedDetector) or (
        type(plugin).analyze_string is not RegexBasedDetector.analyze_string
    ):
        yield from plugin.analyze_string(text)
        return
    for pattern in plugin.denylist:
        for match in pattern.finditer(text):
            value = match.group(0)
            if match.lastindex is not None:
                group = match.lastindex
                if match.group(group) and match.end(0) - match.end(group) <= 1:
                    value = match.group(group)
            yield value


def secrets_in(text: str) -> dict[str, str]:
    """Every secret the plugins find in `text`, as value -> type (a URL password as
    `:password@`, so that a short one is replaced only there)."""
    found: dict[str, str] = {}
    for window in _windows(text):
        for plugin in PLUGINS:
            for value in _values(plugin, window):
                if value and not value.startswith("[REDACTED:"):
                    key = f":{value}@" if isinstance(plugin, BasicAuthDetector) else value
                    found.setdefault(key, str(plugin.secret_type))
    return found


def redact(text: str) -> Redacted:
    """`text` with every secret the plugins find replaced by `[REDACTED:<type>]`."""
    found: Counter[str] = Counter()
    pieces: list[str] = []
    cursor = 0
    for start, stop in _pem_blocks(text):
        pieces += [text[cursor:start], "[REDACTED:Private Key]"]
        found["Private Key"] += 1
        cursor = stop
    if cursor:
        text = "".join([*pieces, text[cursor:]])
    secrets = secrets_in(text)
    # Longest first: a value inside another (a key in a URL) is not left half replaced.
    for value in sorted(secrets, key=len, reverse=True):
        count = text.count(value)
        if count:
            kind = secrets[value]
            replacement = f"[REDACTED:{kind}]"
            if kind == BasicAuthDetector.secret_type:
                replacement = f":{replacement}@"
            text = text.replace(value, replacement)
            found[kind] += count
    return Redacted(text, found)


def note(found: Counter[str]) -> str:
    """The short line that tells the model (and the user) what was redacted."""
    total = sum(found.values())
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(found.items()))
    return f"[{total} secret{'s' if total != 1 else ''} redacted from this result: {kinds}]"


def size(content: list[Block] | str) -> int:
    """The characters a redaction of this content scans."""
    if isinstance(content, str):
        return len(content)
    return sum(len(b["text"]) for b in content if b.get("type") == "text" and isinstance(b.get("text"), str))


def redact_content(content: list[Block] | str) -> tuple[list[Block] | str, Counter[str]]:
    """A tool result's content with its secrets redacted: the text, or each text block's text
    (other blocks, such as images, are kept as they are)."""
    if isinstance(content, str):
        done = redact(content)
        return done.text, done.found
    found: Counter[str] = Counter()
    blocks: list[Block] = []
    for block in content:
        text: Any = block.get("text") if block.get("type") == "text" else None
        if isinstance(text, str):
            done = redact(text)
            found += done.found
            block = {**block, "text": done.text}
        blocks.append(block)
    return blocks, found


def with_note(content: list[Block] | str, found: Counter[str]) -> list[Block] | str:
    """The content with a last line saying how many secrets were taken out of it (if any)."""
    if not found:
        return content
    line = note(found)
    if isinstance(content, str):
        return f"{content}\n{line}" if content else line
    return [*content, {"type": "text", "text": line}]
