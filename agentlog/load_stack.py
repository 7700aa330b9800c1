"""A stack of its own for a load test: `agentlog up` in a temporary directory, answering with the
offline model or with the fake Anthropic server (started here too); stopped by pid afterwards."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agentlog import devstack


@dataclass(frozen=True)
class ModelSetup:
    """Which model answers and how: `offline` or `fake-anthropic`, its latency, its usage."""

    kind: str = "offline"
    latency_ms: int = 1000
    input_tokens: int = 1000
    output_tokens: int = 200
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Target:
    """Where the api of the stack under load answers."""

    api_url: str
    token: str | None


def _fake_anthropic(setup: ModelSetup, log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "agentlog.fake_anthropic", "--latency-ms", str(setup.latency_ms)]
    for name in ("input", "output", "cache-read", "cache-write"):
        argv += [f"--{name}-tokens", str(getattr(setup, f"{name.replace('-', '_')}_tokens"))]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        preexec_fn=devstack.die_with_parent,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().decode().strip()  # the server prints its URL first
    if not base_url.startswith("http://"):
        stop_process(proc)
        raise RuntimeError("the fake Anthropic server did not start (see its log)")
    return proc, base_url


def _wait_ready(data_dir: Path, proc: subprocess.Popen[bytes], log_path: Path, within: float) -> Target:
    deadline = time.monotonic() + within
    stack_file = data_dir / "stack.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"agentlog up exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if stack_file.exists():
            stack = json.loads(stack_file.read_text())
            try:
                with urllib.request.urlopen(f"{stack['api_url']}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return Target(stack["api_url"], stack.get("api_token"))
            except OSError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"agentlog up was not ready within {within:.0f}s:\n{log_path.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 60) -> None:
    """SIGTERM a process we started, by its pid; SIGKILL it past `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Within the block a SIGTERM unwinds like Ctrl-C, so what was started here is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only there can it be set
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def own_stack(setup: ModelSetup, partitions: int = 8, within: float = 120) -> Iterator[Target]:
    """`agentlog up` (and the fake Anthropic server) in a temporary directory, for the block."""
    # Nothing of the caller's stack or credentials: never a paid endpoint, never their database.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTLOG_", "ANTHROPIC_"))}
    procs: list[subprocess.Popen[bytes]] = []
    with (
        _sigterm_interrupts(),
        tempfile.TemporaryDirectory(prefix="agentlog-load-") as tmp,
        open(Path(tmp) / "up.log", "ab") as log,
    ):
        try:
            if setup.kind == "fake-anthropic":
                fake, base_url = _fake_anthropic(setup, log)
                procs.append(fake)
                env.update(ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY="fake-key")
            else:
                env["AGENTLOG_OFFLINE_MODEL_LATENCY_MS"] = str(setup.latency_ms)
            data_dir = Path(tmp) / "agentlog"
            argv = [sys.executable, "-m", "agentlog", "up", "--data-dir", str(data_dir)]
            up = subprocess.Popen(
                [*argv, "--partitions", str(partitions)],
                env=env,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # SIGTERM, not SIGKILL, should we die: `up` then stops Postgres on its way out.
                preexec_fn=functools.partial(devstack.die_with_parent, signal.SIGTERM),
            )
            procs.append(up)
            yield _wait_ready(data_dir, up, Path(tmp) / "up.log", within)
        finally:
            for proc in reversed(procs):  # `up` stops its children and Postgres itself
                stop_process(proc)
