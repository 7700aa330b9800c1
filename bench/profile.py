"""py-spy attached to running processes while a benchmark drives them, and a text summary of
where their CPU went (the flame graphs stay out of the repository: in the directory given).

`py-spy record --format raw` writes collapsed stacks ("frame;frame;frame count" per line),
which flame graph tools read and which `summary` ranks: by self time (the innermost frame)
and by total time (any frame of the stack), as % of the process's samples.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.procstat import Watched


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed: pip install 'agentlog[compare]'")
    return found


class Profiler:
    """py-spy record on each process until `stop`; its output in `directory/NAME.txt`."""

    def __init__(self, directory: Path, watched: list[Watched], rate: int = 100) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        spy = _py_spy()
        for w in watched:
            out = directory / f"{w.name}.txt"
            with open(directory / f"{w.name}.py-spy.log", "wb") as log:
                self.procs[w.name] = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(w.pid),
                        "--rate",
                        str(rate),
                        "--nonblocking",
                        "--full-filenames",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def stop(self) -> dict[str, Path]:
        """Stop every recorder (SIGINT: it writes its file); the files that were written."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        written: dict[str, Path] = {}
        for name, proc in self.procs.items():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            path = self.directory / f"{name}.txt"
            if path.exists():
                written[name] = path
        return written


ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def _frame(text: str) -> str:
    """`function (path/to/module.py:LINE)` without the line, its path from the repository or
    the package's directory: one entry per function."""
    head, _, rest = text.partition(" (")
    where = rest.rsplit(":", 1)[0].removeprefix(ROOT)
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        where = where.rpartition(marker)[2]
    return f"{head} ({where})"


def stacks(path: Path) -> Counter[tuple[str, ...]]:
    """The collapsed stacks of a raw py-spy file, outermost frame first, with their counts."""
    out: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out[tuple(_frame(f) for f in stack.split(";") if not f.startswith("process "))] += int(count)
    return out


# Where a thread waits for I/O with nothing to do: py-spy may count such a sample as active
# (a thread in epoll_wait on a loaded machine is runnable), so the summary sets it apart.
IDLE = ("EpollSelector.select (selectors.py)", "_PollLikeSelector.select (selectors.py)")
# Where a thread hands a message to a socket (a Postgres query, a Kafka request): the kernel
# wakes the peer there and may switch to it, so on a loaded machine many samples land on
# these lines while the thread waits for a core. They count round trips more than CPU; the
# summary reports them apart from the rest.
SENDS = (
    "BaseCursor._send_query_prepared (psycopg/_cursor_base.py)",
    "BaseCursor._execute_send (psycopg/_cursor_base.py)",
    "BasePipeline._communicate_gen (psycopg/_pipeline_base.py)",
    "BaseConnection._exec_command (psycopg/_connection_base.py)",
    "_SelectorSocketTransport.write (asyncio/selector_events.py)",
)
OURS = ("(api/", "(eventstore/", "(processors/", "(observe/", "(agentlog/")
ENTRY = ("(agentlog/__main__.py)", "(agentlog/cli/")


def _package(frame: str) -> str:
    where = frame.rpartition(" (")[2].rstrip(")")
    return where.split("/", 1)[0] if "/" in where else where.removesuffix(".py")


def _ours(stack: tuple[str, ...]) -> str:
    """The innermost frame of agentlog's own code (not its CLI entry), or the outermost frame
    past the event loop if none: what the sample's time was spent for."""
    for frame in reversed(stack):
        if frame.endswith(OURS) or any(p in frame for p in OURS):
            if not any(e in frame for e in ENTRY):
                return frame
    return stack[-1] if stack else "?"


def _rows(counter: Counter[str], total: int, top: int, title: str) -> list[str]:
    lines = ["", f"| {title} | % |", "|---|---:|"]
    return lines + [f"| {name} | {100 * n / total:.1f} |" for name, n in counter.most_common(top)]


def summary(path: Path, top: int = 15) -> str:
    """Where the process's active samples went, as markdown: the leaf function (self time),
    the leaf's package, and the innermost agentlog function the sample was spent for."""
    counted = stacks(path)
    total = sum(counted.values())
    active = {stack: n for stack, n in counted.items() if stack and stack[-1] not in IDLE}
    busy = sum(active.values())
    if not busy:
        return f"{total} samples, none active"
    sends: Counter[str] = Counter()
    own: Counter[str] = Counter()
    package: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for stack, n in active.items():
        if stack[-1] in SENDS:
            sends[_ours(stack)] += n
            continue
        own[stack[-1]] += n
        package[_package(stack[-1])] += n
        ours[_ours(stack)] += n
    sent = sum(sends.values())
    rest = busy - sent
    lines = [
        f"{total} samples, {busy} active ({100 * busy / total:.0f} %), of which {sent}"
        f" ({100 * sent / busy:.0f} %) on a socket send (a Postgres query or a Kafka request"
        f" leaving) and {rest} elsewhere."
    ]
    lines += _rows(sends, sent or 1, 10, "socket sends, by the agentlog function sending")
    lines += ["", f"The {rest} other active samples:"]
    lines += _rows(package, rest or 1, 10, "leaf package")
    lines += _rows(own, rest or 1, top, "leaf function (self time)")
    lines += _rows(ours, rest or 1, top, "innermost agentlog function (with what it calls)")
    return "\n".join(lines)
