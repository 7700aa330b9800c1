"""The Bash tool run for real in its bubblewrap sandbox (no broker, no database): what a command
can and cannot reach, and that every limit ends with nothing left running."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore.settings import Settings
from processors.tools import bash
from processors.tools.bash import Bash
from processors.tools.registry import ToolContext, ToolOutput

needs_bwrap = pytest.mark.skipif(
    bash.find_program("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
)
real_find_program = bash.find_program


def context(workspace: Path, allow_network: bool = False, **overrides: Any) -> ToolContext:
    return ToolContext("s-bash", workspace, Settings(**overrides), allow_network=allow_network)


async def run(command: str, ctx: ToolContext, **tool_input: Any) -> ToolOutput:
    return await Bash().run({"command": command, **tool_input}, ctx)


def text(out: ToolOutput) -> str:
    assert isinstance(out.content, str)
    return out.content


def marker() -> str:
    """A sleep duration no other process has in its command line: 30.<12 random digits>."""
    return f"30.{uuid.uuid4().int % 10**12:012d}"


def processes_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark.encode() in cmdline:
                found.append(int(entry.name))
    return found


async def settled(mark: str, present: bool, within_s: float = 5.0) -> bool:
    """Whether processes with `mark` are (or are not) there, waiting a little for the kernel."""
    deadline = time.monotonic() + within_s
    while bool(processes_with(mark)) != present:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def owner(path: Path) -> int:
    return path.stat().st_uid


def hide(monkeypatch: pytest.MonkeyPatch, *programs: str) -> None:
    """Make these programs look not installed to the Bash tool."""

    def find_program(name: str) -> str | None:
        return None if name in programs else real_find_program(name)

    monkeypatch.setattr(bash, "find_program", find_program)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@needs_bwrap
async def test_commands_run_in_the_workspace_and_write_there(workspace: Path) -> None:
    out = await run("echo hello; pwd; echo content > made.txt; id -u", context(workspace))
    assert not out.is_error, out
    lines = text(out).split()
    assert lines[:2] == ["hello", "/workspace"]
    assert (workspace / "made.txt").read_text() == "content\n"
    if os.geteuid() == 0:
        assert lines[2] != "0", "commands never run as root"
        assert owner(workspace / "made.txt") == owner(workspace)


@needs_bwrap
@pytest.mark.parametrize("target", ["/usr/x", "/tmp/../etc/x", "/workspace/../x"])
async def test_writes_outside_the_workspace_fail(workspace: Path, target: str) -> None:
    host = {"/usr/x": Path("/usr/x"), "/tmp/../etc/x": Path("/etc/x")}
    host["/workspace/../x"] = workspace.parent / "x"
    assert not host[target].exists()
    out = await run(f"echo x > {target}", context(workspace))
    assert out.is_error
    assert not host[target].exists()


@needs_bwrap
async def test_files_outside_the_workspace_are_out_of_reach(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secret = tmp_path_factory.mktemp("elsewhere") / "key.txt"
    secret.write_text("TOPSECRET")
    secret.chmod(0o644)
    for command in (f"cat {secret}", "cat /etc/shadow", "ls /root"):
        out = await run(command, context(workspace))
        assert out.is_error, (command, out)
    assert "TOPSECRET" not in text(await run(f"cat {secret} 2>&1; ls {secret.parent}", context(workspace)))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


def accepted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@needs_bwrap
async def test_there_is_no_network(workspace: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    command = f"echo hi > /dev/tcp/127.0.0.1/{port}"
    out = await run(command, context(workspace))
    assert out.is_error
    assert not accepted(listener)
    # The same command reaches the listener when the session allows the network.
    out = await run(command, context(workspace, allow_network=True))
    assert not out.is_error, out
    assert accepted(listener)


@needs_bwrap
async def test_the_environment_is_clean(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-for-the-sandbox")
    out = await run("env; cat /proc/self/environ", context(workspace))
    assert not out.is_error, out
    assert "PATH=" in text(out)
    assert "ANTHROPIC" not in text(out) and "sk-ant" not in text(out)


@needs_bwrap
async def test_a_fork_bomb_is_contained(workspace: Path) -> None:
    mark = marker()
    ctx = context(workspace, bash_max_processes=32, bash_timeout_s=3)
    started = time.monotonic()
    out = await run(f"for i in $(seq 320); do sleep {mark} & done; wait", ctx)
    assert time.monotonic() - started < 10
    assert out.is_error
    assert "fork" in text(out)  # the process limit, not the timeout alone, stopped it
    assert await settled(mark, present=False)


@needs_bwrap
async def test_a_timeout_kills_the_command(workspace: Path) -> None:
    mark = marker()
    started = time.monotonic()
    out = await run(f"echo before; sleep {mark}", context(workspace), timeout=1)
    assert time.monotonic() - started < 10
    assert out.is_error
    assert "before" in text(out) and "timed out after 1 s" in text(out)
    assert await settled(mark, present=False)


@needs_bwrap
async def test_the_timeout_asked_for_cannot_exceed_the_setting(workspace: Path) -> None:
    out = await run(f"sleep {marker()}", context(workspace, bash_timeout_s=1), timeout=100)
    assert out.is_error and "timed out after 1 s" in text(out)


@needs_bwrap
async def test_background_processes_end_with_the_command(workspace: Path) -> None:
    mark = marker()
    out = await run(f"sleep {mark} & echo started", context(workspace))
    assert not out.is_error and text(out).strip() == "started"
    assert await settled(mark, present=False)


@needs_bwrap
async def test_long_output_is_cut(workspace: Path) -> None:
    ctx = context(workspace, bash_max_output_bytes=1000)
    out = await run("yes | head -c 10000000", ctx)
    assert not out.is_error
    assert text(out).startswith("y\ny\n")
    assert "[output truncated: 10000000 bytes, showing the first 1000]" in text(out)
    assert len(text(out)) < 1200


@needs_bwrap
async def test_endless_output_is_stopped(workspace: Path) -> None:
    out = await run("yes", context(workspace, bash_max_output_bytes=1000, bash_timeout_s=30))
    assert out.is_error
    assert "[output truncated: the command wrote more than" in text(out)
    assert "timed out" not in text(out)
    assert text(await run("echo alive", context(workspace))) == "alive\n"


@needs_bwrap
async def test_a_failing_command_is_an_error_with_its_exit_code(workspace: Path) -> None:
    out = await run("echo oops; exit 3", context(workspace))
    assert out.is_error
    assert text(out) == "oops\n[exit code 3]"


@needs_bwrap
async def test_cancelling_the_call_kills_the_command(workspace: Path) -> None:
    mark = marker()
    task = asyncio.create_task(run(f"sleep {mark}", context(workspace)))
    assert await settled(mark, present=True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await settled(mark, present=False)


async def test_bad_input_is_an_error(workspace: Path) -> None:
    ctx = context(workspace)
    assert (await Bash().run({}, ctx)).is_error
    assert (await Bash().run({"command": 42}, ctx)).is_error
    assert (await run("ls", ctx, timeout="soon")).is_error
    assert (await run("ls", ctx, timeout=0)).is_error


async def test_without_bubblewrap_bash_is_unavailable_by_default(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(monkeypatch, "bwrap")
    out = await run("echo hi", context(workspace))
    assert out.is_error
    assert text(out) == bash.UNAVAILABLE


async def test_a_sandbox_that_cannot_start_says_what_the_container_lacks(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As bwrap answers in a container whose seccomp profile forbids user namespaces."""
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --help) exit 0 ;; esac\n'
        "echo 'bwrap: No permissions to create a new namespace, likely because the kernel does not"
        " allow non-privileged user namespaces.' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)

    def find_program(name: str) -> str | None:
        return str(fake) if name == "bwrap" else real_find_program(name)

    monkeypatch.setattr(bash, "find_program", find_program)
    out = await run("echo hi", context(workspace))
    assert out.is_error
    assert text(out).startswith("bwrap: No permissions to create a new namespace")
    assert text(out).endswith(bash.SANDBOX_FAILED)
    assert "docs/operations.md" in bash.SANDBOX_FAILED and "UNSANDBOXED" not in bash.SANDBOX_FAILED
    assert "UNSANDBOXED" not in bash.UNAVAILABLE
    assert any("could not start its sandbox" in r.getMessage() for r in caplog.records)


async def test_without_bubblewrap_it_may_run_unsandboxed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(monkeypatch, "bwrap")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-for-the-sandbox")
    mark = marker()
    ctx = context(workspace, bash_allow_unsandboxed=True)
    out = await run(f"pwd; env; sleep {mark} & echo done", ctx)
    assert not out.is_error, out
    assert text(out).startswith(f"{workspace}\n")
    assert "ANTHROPIC" not in text(out)
    assert await settled(mark, present=False)
    timed_out = await run(f"sleep {mark}", ctx, timeout=1)
    assert timed_out.is_error and "timed out" in text(timed_out)
    assert await settled(mark, present=False)


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges without setpriv only happens as root")
async def test_without_setpriv_and_prlimit_limits_still_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "setpriv", "prlimit")
    # bwrap then runs unprivileged, so the workspace must be reachable for the sandbox user.
    with tempfile.TemporaryDirectory() as root:
        out = await run("id -u; ulimit -u", context(Path(root), bash_max_processes=40))
    assert not out.is_error, out
    uid, limit = text(out).split()
    # The limit is 40 more than the tasks the sandbox user already has (normally none).
    assert uid != "0" and 40 <= int(limit) < 1000


async def test_memory_and_tmp_are_bounded(workspace: Path) -> None:
    ctx = context(workspace, bash_max_memory_bytes=256 * 1024**2)
    out = await run("python3 -c 'bytearray(1 << 30)' || echo refused", ctx)
    assert "MemoryError" in text(out) or "refused" in text(out)
    fill = await run("head -c 300000000 /dev/urandom > /tmp/big; echo rc=$?; ls -la /tmp", ctx)
    # /tmp is memory: a cgroup's memory limit may stop the command before the tmpfs is full.
    bounded = ("No space left on device", "rc=1", "[memory limit reached")
    assert any(said in text(fill) for said in bounded)
