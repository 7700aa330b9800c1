"""A cgroup per Bash command, where the host lets this process make them: memory (the whole
command's, swap included), processes and CPU bounded together, and every process of the
command killed through its cgroup at the end.

Two layouts are understood: cgroup v2 (one tree; `memory.max`, `pids.max`, `cpu.max`) and
v1 (a tree per controller; `memory.limit_in_bytes`, `pids.max`, `cpu.cfs_quota_us`). Command
cgroups are made under `agentlog-bash` in this process's own cgroup (v1), or in the
delegated cgroup named by AGENTLOG_BASH_CGROUP (v2, where a cgroup holding processes cannot
give controllers to children). Where neither works, `probe` says why once, and the sandbox
falls back to per-process limits (RLIMIT_NPROC, RLIMIT_AS).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PARENT = "agentlog-bash"
_V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Limits:
    """What one command may use, all its processes together."""

    memory_bytes: int
    processes: int
    cpus: float


@dataclass(frozen=True)
class Host:
    """Where command cgroups are made: v2, one parent; v1, a parent per controller."""

    version: int
    parents: tuple[Path, ...]


class Unavailable(Exception):
    """This host gives this process no cgroups to make; the message says why."""


def _own_paths() -> dict[str, str]:
    """This process's cgroup per controller ("" for the v2 tree), from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _v2_parent(configured: str) -> Path:
    if configured not in ("", "auto"):
        base = Path(configured)
    else:
        own = _own_paths().get("", "/")
        if own != "/":
            raise Unavailable(
                f"this process's cgroup ({own}) holds processes, so cgroup v2 lets it give no"
                " controllers to children: set AGENTLOG_BASH_CGROUP to a cgroup delegated to the"
                " executor (docs/tools.md)"
            )
        base = ROOT
    wanted = {"memory", "pids", "cpu"}
    have = set((base / "cgroup.controllers").read_text().split())
    if not wanted <= have:
        raise Unavailable(f"{base} lacks the controllers {sorted(wanted - have)}")
    enabled = set((base / "cgroup.subtree_control").read_text().split())
    if not wanted <= enabled:
        _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
    parent = base / PARENT
    parent.mkdir(exist_ok=True)
    _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
    return parent


def _v1_parents() -> tuple[Path, ...]:
    own = _own_paths()
    parents = []
    for name in _V1_CONTROLLERS:
        mount = ROOT / name
        if name not in own or not (mount / "cgroup.procs").exists():
            raise Unavailable(f"no cgroup v1 {name} controller mounted at {mount}")
        parent = mount / own[name].lstrip("/") / PARENT
        parent.mkdir(exist_ok=True)
        parents.append(parent)
    return tuple(parents)


def _find(configured: str) -> Host:
    if configured == "off":
        raise Unavailable("AGENTLOG_BASH_CGROUP=off")
    if (ROOT / "cgroup.controllers").exists() or configured not in ("", "auto"):
        return Host(2, (_v2_parent(configured),))
    return Host(1, _v1_parents())


@functools.cache
def probe(configured: str) -> Host | Unavailable:
    """Where this process can make command cgroups, tried once: a test cgroup is made, given
    limits and removed. Says once, in the log, when it cannot."""
    try:
        host = _find(configured)
        Command.make(host, Limits(64 * 1024**2, 8, 1.0)).remove()
    except (OSError, Unavailable) as exc:
        reason = exc if isinstance(exc, Unavailable) else Unavailable(f"{type(exc).__name__}: {exc}")
        if configured != "off":
            log.warning(
                "Bash: no cgroup per command on this host (%s); each command is bounded by per-process"
                " limits only (RLIMIT_NPROC, RLIMIT_AS), not in memory or CPU as a whole",
                reason,
            )
        return reason
    log.info("Bash: a cgroup per command (cgroup v%d, under %s)", host.version, host.parents[0])
    return host


@dataclass
class Command:
    """One command's cgroup (one directory per v1 controller)."""

    host: Host
    dirs: tuple[Path, ...]

    @classmethod
    def make(cls, host: Host, limits: Limits) -> Command:
        """A new cgroup with the limits written; removed again if a limit cannot be set."""
        name = f"cmd-{uuid.uuid4().hex[:16]}"
        made: list[Path] = []
        try:
            for parent in host.parents:
                (parent / name).mkdir()
                made.append(parent / name)
            command = cls(host, tuple(made))
            command._limit(limits)
        except BaseException:
            for path in made:
                with suppress(OSError):
                    path.rmdir()
            raise
        return command

    def _file(self, controller: str, name: str) -> Path:
        if self.host.version == 2:
            return self.dirs[0] / name
        return self.dirs[_V1_CONTROLLERS.index(controller)] / name

    def _limit(self, limits: Limits) -> None:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if self.host.version == 2:
            _write(self._file("memory", "memory.max"), str(limits.memory_bytes))
            with suppress(FileNotFoundError):  # no swap accounting: no swap to bound
                _write(self._file("memory", "memory.swap.max"), "0")
            _write(self._file("pids", "pids.max"), str(limits.processes))
            _write(self._file("cpu", "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            return
        _write(self._file("memory", "memory.limit_in_bytes"), str(limits.memory_bytes))
        with suppress(OSError):  # memsw exists only with swap accounting
            _write(self._file("memory", "memory.memsw.limit_in_bytes"), str(limits.memory_bytes))
        _write(self._file("pids", "pids.max"), str(limits.processes))
        _write(self._file("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        _write(self._file("cpu", "cpu.cfs_quota_us"), str(quota))

    def open_procs(self) -> list[int]:
        """Descriptors on each cgroup.procs, opened here so that the child only writes "0"
        to them (moving itself) before it execs: everything it starts is born inside."""
        return [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs]

    def pids(self) -> list[int]:
        """The processes in the cgroup now."""
        found: set[int] = set()
        for d in self.dirs:
            with suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return sorted(found)

    def oom_kills(self) -> int:
        """How many of the command's processes the memory limit killed."""
        name = "memory.events" if self.host.version == 2 else "memory.oom_control"
        with suppress(OSError, ValueError):
            for line in self._file("memory", name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def kill(self, within_s: float = 2.0) -> None:
        """SIGKILL every process in the cgroup, until none is left (or time runs out)."""
        kill_file = self.dirs[0] / "cgroup.kill"
        deadline = time.monotonic() + within_s
        while pids := self.pids():
            if self.host.version == 2 and kill_file.exists():
                with suppress(OSError):
                    _write(kill_file, "1")
            else:
                for pid in pids:
                    with suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                log.warning("Bash: processes %s of cgroup %s outlived SIGKILL", pids, self.dirs[0])
                return
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup (a busy one is logged and left)."""
        self.kill()
        for path in self.dirs:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                log.warning("Bash: could not remove cgroup %s", path)
