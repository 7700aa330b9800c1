"""`agentlog up` as a user runs it, for tests and benchmarks that need real processes (kills,
pauses, replicas): started in a directory of its own with a clean environment, waited for
until ready, stopped by its pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentlog.load_stack import stop_process


@contextmanager
def agentlog_up(
    cwd: Path, *args: str, env: dict[str, str] | None = None, within: float = 120, grace: float = 120
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """Run `agentlog up ARGS` in `cwd` (output in `cwd/up.out`) with no `AGENTLOG_*` or
    `ANTHROPIC_*` variable but those of `env`; yields the process and its stack.json once it
    says it is ready. On exit: SIGTERM, then SIGKILL past `grace` seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLOG_", "ANTHROPIC_"))}
    with open(cwd / "up.out", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentlog", "up", *args],
            cwd=cwd,
            env=clean | (env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + within
        while "ready;" not in (printed := (cwd / "up.out").read_text(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agentlog up {' '.join(args)} did not become ready:\n{printed}")
            time.sleep(0.2)
        yield proc, dict(json.loads((cwd / ".agentlog" / "stack.json").read_text()))
    finally:
        stop_process(proc, grace)
