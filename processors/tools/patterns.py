"""Patterns the model writes — Grep's regular expression, Glob's and Grep's globs — run on
RE2, whose matching time is linear in the text (STACK.md). Never Python's `re`: it
backtracks without bound and holds the interpreter lock while it does, so one pattern like
`(a+)+$` would stop the executor's event loop, its timeouts and its heartbeats, for every
session. A pattern RE2 cannot run is refused with a message the model can read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import re2

# Bounds on the work one search may ask for: RE2 is linear in the text and in the pattern,
# so these bound a call's time (and its DFA's memory) whatever the model writes.
MAX_PATTERN_CHARS = 2000
MAX_LINE_CHARS = 4000
MAX_PROGRAM_BYTES = 8 << 20

_UNSUPPORTED = (
    "RE2 syntax is Python's without backreferences (\\1, (?P=name)) and without lookaround"
    " ((?=…), (?!…), (?<=…), (?<!…)); search for a simpler pattern and filter the matches"
)


class PatternRefused(ValueError):
    """A pattern that cannot run; the message is for the model."""


class Regex(Protocol):
    """A compiled RE2 expression (the part of its interface the tools use)."""

    def search(self, text: str) -> object | None: ...


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # the refusal goes to the model, not to our stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


def _compile(pattern: str, what: str) -> Regex:
    try:
        compiled: Regex = re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternRefused(f"invalid {what}: {reason}. {_UNSUPPORTED}") from None
    return compiled


def regex(pattern: object) -> Regex:
    """The model's regular expression compiled for RE2, or PatternRefused saying why not."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternRefused("pattern must be a non-empty string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"pattern is {len(pattern)} characters, over the limit of {MAX_PATTERN_CHARS}")
    return _compile(pattern, "regular expression")


def _segment(part: str) -> str:
    """One path segment of a glob as RE2: `*`, `?` and `[...]` never cross a `/`."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)) > 0:
            body = part[i + 1 : end]
            negated = body.startswith("!")
            body = body[1:] if negated else body
            chars = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
            out.append(f"[^/{chars}]" if negated else f"(?:[{chars}])")
            i = end
        else:
            out.append(re2.escape(c))
        i += 1
    return "".join(out)


def glob(pattern: object) -> Callable[[str], bool]:
    """A glob (`**/*.py`, `src/[ab]?.md`) as a test of a `/`-separated relative path: `*` and
    `?` stay within a segment, a `**` segment spans any number of directories (none too)."""
    if not isinstance(pattern, str) or not pattern or "\x00" in pattern:
        raise PatternRefused("pattern must be a non-empty string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"pattern is {len(pattern)} characters, over the limit of {MAX_PATTERN_CHARS}")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if not parts:
        raise PatternRefused("pattern names no file")
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    compiled = _compile("^" + "".join(out) + "$", "glob")
    return lambda path: compiled.search(path) is not None
