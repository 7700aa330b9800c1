"""Is a shell command read-only? Fail closed: only a line whose every simple command is a
known read-only program with safe arguments is `read`; anything else, or anything the
scanner does not understand, is `write` (and a write is never run twice, DESIGN.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

# --- classification -------------------------------------------------------------------------
# Read-only only when every simple command is a known read-only program with safe arguments;
# anything the scanner does not understand is a write (DESIGN.md: a write is never rerun).


class _Refused(Exception):
    """The line uses shell syntax the classifier does not accept as read-only."""


@dataclass(frozen=True)
class _Word:
    text: str
    expands: bool  # holds unquoted glob or brace characters: its words are unknown until run


_REDIRECT_TARGET_END = " \t\n;&|<>()"


class _Scanner:
    """Splits a command line into simple commands of words, refusing what it cannot vouch for:
    substitutions, expansions, here-documents, subshells, background jobs, redirection to files."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.i = 0
        self.commands: list[list[_Word]] = [[]]
        self.buf: list[str] = []
        self.plain = True  # the word so far is unquoted digits-only candidate for an fd number
        self.started = False
        self.expands = False

    def end_word(self) -> None:
        if self.started:
            self.commands[-1].append(_Word("".join(self.buf), self.expands))
        self.buf, self.plain, self.started, self.expands = [], True, False, False

    def end_command(self) -> None:
        self.end_word()
        self.commands.append([])

    def add(self, text: str, quoted: bool) -> None:
        self.buf.append(text)
        self.started = True
        self.plain = self.plain and not quoted

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.line[j] if j < len(self.line) else ""

    def scan(self) -> list[list[_Word]]:
        line = self.line
        while self.i < len(line):
            c = line[self.i]
            if c == "'":
                end = line.find("'", self.i + 1)
                if end < 0:
                    raise _Refused
                self.add(line[self.i + 1 : end], quoted=True)
                self.i = end
            elif c == '"':
                self.double_quoted()
            elif c == "\\":
                nxt = self.peek(1)
                if not nxt:
                    raise _Refused
                if nxt != "\n":
                    self.add(nxt, quoted=True)
                self.i += 1
            elif c in " \t":
                self.end_word()
            elif c in ";\n":
                self.end_command()
            elif c == "|":
                if self.peek(1) == "&":
                    raise _Refused
                if self.peek(1) == "|":
                    self.i += 1
                self.end_command()
            elif c == "&":
                if self.peek(1) == "&":
                    self.i += 1
                    self.end_command()
                elif self.peek(1) == ">":
                    self.end_word()
                    self.i += 1
                    self.redirect_out(dup_allowed=False)
                else:
                    raise _Refused  # a background job
            elif c in "<>":
                if self.started and self.plain and "".join(self.buf).isdigit():
                    self.buf, self.started = [], False  # the fd number of the redirection
                self.end_word()
                if c == ">":
                    self.redirect_out(dup_allowed=True)
                else:
                    self.redirect_in()
            elif c in "()$`":
                raise _Refused
            else:
                self.add(c, quoted=False)
                self.expands = self.expands or c in "*?[{"
            self.i += 1
        self.end_word()
        return [words for words in self.commands if words]

    def double_quoted(self) -> None:
        line, j = self.line, self.i + 1
        while j < len(line) and line[j] != '"':
            c = line[j]
            if c in "$`":
                raise _Refused
            if c == "\\" and j + 1 < len(line) and line[j + 1] in '$`"\\\n':
                if line[j + 1] != "\n":
                    self.add(line[j + 1], quoted=True)
                j += 2
                continue
            self.add(c, quoted=True)
            j += 1
        if j >= len(line):
            raise _Refused
        self.started = True
        self.plain = False
        self.i = j

    def target(self) -> str:
        """The word a redirection names (plain characters only); leaves i on its last one."""
        j = self.i + 1
        while j < len(self.line) and self.line[j] in " \t":
            j += 1
        start = j
        while j < len(self.line) and self.line[j] not in _REDIRECT_TARGET_END:
            if self.line[j] in "'\"\\$`*?[{~":
                raise _Refused
            j += 1
        if j == start:
            raise _Refused
        self.i = j - 1
        return self.line[start:j]

    def duplicate(self) -> bool:
        """`>&2`, `2>&1`, `<&-`: fd duplication, harmless; i ends on the fd."""
        if self.peek(1) != "&":
            return False
        self.i += 1
        j = self.i + 1
        while j < len(self.line) and (self.line[j].isdigit() or self.line[j] == "-"):
            j += 1
        if j == self.i + 1 or (j < len(self.line) and self.line[j] not in _REDIRECT_TARGET_END):
            raise _Refused  # `>&file` writes a file
        self.i = j - 1
        return True

    def redirect_out(self, dup_allowed: bool) -> None:
        if self.peek(1) in (">", "|"):
            self.i += 1
        if dup_allowed and self.duplicate():
            return
        if self.target() != "/dev/null":
            raise _Refused

    def redirect_in(self) -> None:
        if self.peek(1) in ("<", ">", "("):
            raise _Refused  # here-document or -string, read-write open, process substitution
        if not self.duplicate():
            self.target()


def _long_option(word: str, *names: str) -> bool:
    """Whether `word` is one of these long options or an abbreviation getopt would accept."""
    if not word.startswith("--") or len(word) < 3:
        return False
    name = word.split("=", 1)[0]
    return any(n.startswith(name) or name.startswith(n) for n in names)


def _short_flag(word: str, letters: str) -> bool:
    """Whether a short-option cluster like `-no` holds one of these letters."""
    return word.startswith("-") and not word.startswith("--") and any(c in word[1:] for c in letters)


def _no_expansion(args: Sequence[_Word]) -> bool:
    return not any(w.expands for w in args)


def _find(args: Sequence[_Word]) -> bool:
    unsafe = {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
    return _no_expansion(args) and not any(w.text in unsafe for w in args)


def _sort(args: Sequence[_Word]) -> bool:
    return _no_expansion(args) and not any(
        _short_flag(w.text, "o") or _long_option(w.text, "--output", "--compress-program") for w in args
    )


def _operands(args: Sequence[_Word]) -> int:
    """How many words are file operands: `-` (standard input) is one, and every word after `--`.
    An option's separate value (`-f 1`) counts too, which errs toward more operands: closed."""
    count, options = 0, True
    for w in args:
        if options and w.text == "--":
            options = False
        elif not options or w.text == "-" or not w.text.startswith("-"):
            count += 1
    return count


def _uniq(args: Sequence[_Word]) -> bool:
    # A second file operand is uniq's output file (`uniq - out.txt`, `uniq -- in out`).
    return _no_expansion(args) and _operands(args) <= 1


def _date(args: Sequence[_Word]) -> bool:
    return not any(_short_flag(w.text, "s") or _long_option(w.text, "--set") for w in args)


def _file(args: Sequence[_Word]) -> bool:
    return not any(_short_flag(w.text, "C") or _long_option(w.text, "--compile") for w in args)


def _env(args: Sequence[_Word]) -> bool:
    return all(w.text in ("-0", "--null") for w in args)  # with operands, env runs a program


def _rg(args: Sequence[_Word]) -> bool:
    return not any(w.text.startswith("--pre") for w in args)


# Matched on a stripped part: no two runs of spaces compete, so matching is linear in the
# script (adjacent `\s*` runs made it cubic in a model's long run of spaces).
_SED_PRINT = re.compile(r"(?:(?:\d+|\$)(?:\s*,\s*(?:\d+|\$))?)?\s*[pdq=]?")


def _sed(args: Sequence[_Word]) -> bool:
    """Only line printing (`sed -n '1,20p' f`); every other script is a write, for simplicity."""
    if not _no_expansion(args):
        return False
    scripts, operands, rest = [], [], list(args)
    while rest:
        word = rest.pop(0).text
        if word == "-e" and rest:
            scripts.append(rest.pop(0).text)
        elif word in ("-n", "--quiet", "--silent", "-E", "-r", "--regexp-extended"):
            continue
        elif word.startswith("-"):
            return False
        else:
            operands.append(word)
    if not scripts and operands:
        scripts.append(operands.pop(0))
    return bool(scripts) and all(_SED_PRINT.fullmatch(part.strip()) for s in scripts for part in s.split(";"))


_ANY_ARGUMENTS = frozenset(
    "ls cat head tail wc grep egrep fgrep pwd echo printf stat du df which whoami id uname cut tr "
    "diff cmp basename dirname realpath readlink true false test [ printenv nl tac comm od seq cd "
    "type nproc md5sum sha1sum sha256sum sha512sum jq".split()
)
_CHECKED: dict[str, Callable[[Sequence[_Word]], bool]] = {
    "find": _find,
    "sort": _sort,
    "uniq": _uniq,
    "date": _date,
    "file": _file,
    "env": _env,
    "rg": _rg,
    "sed": _sed,
    # git runs programs named in the workspace's own config (diff.external, core.fsmonitor,
    # textconv), which the model can write: no git command is a read.
}
_SYSTEM_DIRS = ("/bin/", "/usr/bin/", "/usr/local/bin/")


def _read_only(words: Sequence[_Word]) -> bool:
    program = words[0]
    if program.expands and program.text != "[":
        return False
    name = program.text
    for directory in _SYSTEM_DIRS:
        if name.startswith(directory) and "/" not in name[len(directory) :]:
            name = name[len(directory) :]
    if name in _ANY_ARGUMENTS:
        return True
    check = _CHECKED.get(name)
    return check is not None and check(words[1:])


def classify(command: str) -> Literal["read", "write"]:
    """ "read" when the whole line only reads (fail closed: anything unsure is "write")."""
    # `#` may start a comment that hides a quote (and the lines after it) from this scanner.
    if any(s in command for s in ("`", "$(", "<(", ">(", "#")):
        return "write"
    try:
        commands = _Scanner(command).scan()
    except _Refused:
        return "write"
    if commands and all(_read_only(words) for words in commands):
        return "read"
    return "write"
