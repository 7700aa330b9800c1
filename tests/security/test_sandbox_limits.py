"""The Bash sandbox bounded like a container: no namespaces made inside, a cgroup per command
(memory, processes and CPU of all its processes together) where the host allows, per-process
limits where it does not, a disk quota on the workspace, and a cap on commands at once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from processors.tools import cgroups
from processors.tools.files import Write
from tests.integration.test_bash_sandbox import (
    context,
    marker,
    needs_bwrap,
    processes_with,
    run,
    settled,
    text,
)

MiB = 1024**2
# Three processes of 60 MiB each: each under a 128 MiB address-space limit, together over it.
THREE_OF_60 = (
    'for i in 1 2 3; do python3 -c "import time; b = b\\"x\\" * (60 << 20); time.sleep(1)" & done;'
    " wait; echo finished"
)


def cgroups_here() -> cgroups.Host | cgroups.Unavailable:
    return cgroups.probe("auto")


needs_cgroups = pytest.mark.skipif(
    isinstance(cgroups_here(), cgroups.Unavailable),
    reason=f"this host gives the executor no cgroups: {cgroups_here()}",
)


def proc_file(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return ""


async def sleeping(mark: str) -> int:
    """The pid of the command's `sleep`, once it runs (bwrap, before it, has the mark too)."""
    for _ in range(200):
        for pid in processes_with(mark):
            if proc_file(pid, "comm") == "sleep\n":
                return pid
        await asyncio.sleep(0.05)
    raise AssertionError(f"no sleep {mark} started")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@needs_bwrap
@pytest.mark.parametrize("command", ["unshare -Urn true", "unshare -m true", "unshare -p -f true"])
async def test_no_namespace_can_be_made_inside(workspace: Path, command: str) -> None:
    out = await run(f"{command} && echo MADE", context(workspace))
    assert out.is_error
    assert "MADE" not in text(out) and "Operation not permitted" in text(out)


@needs_bwrap
@needs_cgroups
async def test_each_command_runs_in_a_cgroup_of_its_own_with_its_limits(workspace: Path) -> None:
    mark = marker()
    ctx = context(workspace, bash_max_processes=40, bash_max_memory_bytes=300 * MiB, bash_cpus=0.5)
    task = asyncio.create_task(run(f"sleep {mark}", ctx))
    pid = await sleeping(mark)
    lines = proc_file(pid, "cgroup").splitlines()
    made = [line.split(":", 2)[2] for line in lines if f"/{cgroups.PARENT}/cmd-" in line]
    assert made, lines
    host = cgroups_here()
    assert isinstance(host, cgroups.Host)
    mine = [parent / made[0].rsplit("/", 1)[1] for parent in host.parents]
    assert all(str(pid) in (d / "cgroup.procs").read_text().split() for d in mine)
    values = {f.name: f.read_text().strip() for d in mine for f in d.iterdir() if f.name in LIMIT_FILES}
    assert values.get("pids.max") == "40"
    assert values.get("memory.max", values.get("memory.limit_in_bytes")) == str(300 * MiB)
    assert values.get("cpu.max", values.get("cpu.cfs_quota_us", "")).split()[0] == "50000"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await settled(mark, present=False)
    assert not any(d.exists() for d in mine), "the command's cgroup is removed with it"


LIMIT_FILES = {"pids.max", "memory.max", "memory.limit_in_bytes", "cpu.max", "cpu.cfs_quota_us"}


@needs_bwrap
@needs_cgroups
async def test_memory_is_bounded_for_all_the_commands_processes_together(workspace: Path) -> None:
    out = await run(THREE_OF_60, context(workspace, bash_max_memory_bytes=128 * MiB))
    assert out.is_error
    assert "[memory limit reached: the command's processes together may use" in text(out)


@needs_bwrap
async def test_without_cgroups_per_process_limits_hold(workspace: Path) -> None:
    """The fallback: each process within RLIMIT_AS and RLIMIT_NPROC (the total is not bounded)."""
    ctx = context(workspace, bash_cgroup="off", bash_max_memory_bytes=128 * MiB, bash_max_processes=32)
    out = await run(THREE_OF_60, ctx)
    assert not out.is_error and "finished" in text(out), out
    big = await run("python3 -c 'bytearray(200 << 20)' || echo refused", ctx)
    assert "MemoryError" in text(big) and "refused" in text(big)
    mark = marker()
    bomb = await run(f"for i in $(seq 320); do sleep {mark} & done; wait", ctx)
    assert bomb.is_error and "fork" in text(bomb)
    assert await settled(mark, present=False)


def test_a_host_without_cgroups_is_said_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=cgroups.__name__)
    missing = str(tmp_path / "not-a-cgroup")
    found = cgroups.probe(missing)
    assert isinstance(found, cgroups.Unavailable)
    assert cgroups.probe(missing) is found
    said = [r.getMessage() for r in caplog.records if "no cgroup per command" in r.getMessage()]
    assert len(said) == 1 and "per-process limits only" in said[0]


@needs_bwrap
async def test_the_workspace_quota_bounds_bash_and_the_file_tools(workspace: Path) -> None:
    ctx = context(workspace, workspace_max_bytes=2 * MiB)
    # One file cannot outgrow the quota (RLIMIT_FSIZE).
    big = await run("head -c 5000000 /dev/zero > big", ctx)
    assert big.is_error and (workspace / "big").stat().st_size <= 2 * MiB
    await run("rm -f big", ctx)
    # Many files can, once: the command is reported over the quota, and writes are refused.
    many = await run("for i in 1 2 3; do head -c 1000000 /dev/urandom > f$i; done; echo wrote", ctx)
    assert many.is_error
    assert "wrote" in text(many) and "over its quota of 2097152 bytes" in text(many)
    refused = await Write().run({"file_path": "note.txt", "content": "hello"}, ctx)
    assert refused.is_error and "Write refused" in text(refused) and not (workspace / "note.txt").exists()
    assert not (await run("rm f1 f2", ctx)).is_error
    written = await Write().run({"file_path": "note.txt", "content": "hello"}, ctx)
    assert not written.is_error, written
    too_big = await Write().run({"file_path": "x.txt", "content": "x" * (2 * MiB)}, ctx)
    assert too_big.is_error and "quota" in text(too_big)


@needs_bwrap
async def test_commands_at_once_are_capped_per_executor(workspace: Path) -> None:
    from processors.tools.bash import Bash

    bash = Bash()
    ctx = context(workspace, bash_concurrency=2)
    marks = [marker() for _ in range(4)]
    tasks = [asyncio.create_task(bash.run({"command": f"sleep {m}"}, ctx)) for m in marks]
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while sum(bool(processes_with(m)) for m in marks) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time for a third to start, were it let
        assert sum(bool(processes_with(m)) for m in marks) == 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for m in marks:
        assert await settled(m, present=False)
