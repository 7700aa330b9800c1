"""The Bash tool: a command classified read-only or write, run by bash in a bubblewrap sandbox
(the workspace read-write at /workspace, the system read-only, no network, a clean environment,
a seccomp filter so that no namespace can be made inside, time, process, memory, CPU and output
limits, a cgroup per command where the host allows one, the workspace's disk quota), a few at a
time per executor, and nothing it started left running afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eventstore.settings import Settings
from processors.tools import cgroups, quota, seccomp
from processors.tools.classify import classify
from processors.tools.registry import EffectClass, ToolContext, ToolOutput
from processors.tools.workspace import SANDBOX_UID

log = logging.getLogger(__name__)

# Where the sandbox looks for programs (on the host: bwrap, setpriv, prlimit; inside: the rest).
HOST_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
WORKSPACE_MOUNT = "/workspace"
# The sandbox's private /tmp is memory: bounded, so a command cannot fill the host's RAM.
TMP_BYTES = 256 * 1024 * 1024
# A command that writes more than this is killed: we keep only the first bytes anyway.
FLOOD_LIMIT_BYTES = 64 * 1024 * 1024
# After the command exits, how long its last output may take to arrive.
_DRAIN_GRACE_S = 2.0
# What of the host's /etc the sandbox sees: the loader's files and certificates, and with a
# network, name resolution; passwd, group and hosts are made up (_etc).
_ETC_ALWAYS = "alternatives ld.so.cache ld.so.conf ld.so.conf.d localtime ssl ca-certificates".split()
_ETC_NETWORK = "resolv.conf hosts nsswitch.conf gai.conf host.conf".split()
UNAVAILABLE = (
    "Bash is unavailable: bubblewrap (bwrap), its sandbox, is not installed on this tool executor. "
    "The agentlog image has it; elsewhere install it (apt-get install bubblewrap). In a container the "
    'sandbox also needs user namespaces: see docs/operations.md, "The Bash sandbox in a container".'
)
# bwrap could not build the sandbox (it says why, first, as `bwrap: ...`, and exits 1): in a
# container that is a missing permission, not the command's fault.
SANDBOX_FAILED = (
    "[Bash is unavailable: the sandbox could not start on this tool executor. bubblewrap needs "
    "user namespaces, which this container does not allow (seccomp, AppArmor or a masked /proc): "
    'see docs/operations.md, "The Bash sandbox in a container".]'
)


def find_program(name: str) -> str | None:
    """The host's path of a program (bwrap, setpriv, prlimit, bash), or None; tests replace it."""
    return shutil.which(name, path=HOST_PATH)


@dataclass
class _Launch:
    """How to start one command: argv (with files bwrap makes inside the sandbox from `data`,
    spliced in before `tail`), where, and with which Popen options (dropping privileges)."""

    argv: list[str]
    tail: list[str]
    cwd: str | None
    env: dict[str, str]
    data: dict[str, str] = field(default_factory=dict)
    popen: dict[str, Any] = field(default_factory=dict)
    sandboxed: bool = False  # started by bwrap
    seccomp: bytes | None = None  # the filter bwrap installs before the command runs
    cgroup: cgroups.Command | None = None  # the command's own cgroup, where the host allows


@dataclass
class _Outcome:
    head: bytes
    total: int
    returncode: int | None
    timed_out: bool
    flooded: bool
    oom_kills: int = 0


class _Sink(asyncio.Protocol):
    """Reads the command's output as it comes: keeps the first `cap` bytes, counts the rest."""

    def __init__(self, cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.cap = cap
        self.head = bytearray()
        self.total = 0
        self.flooded = asyncio.Event()
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        room = self.cap - len(self.head)
        if room > 0:
            self.head += data[:room]
        self.total += len(data)
        if self.total > FLOOD_LIMIT_BYTES:
            self.flooded.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _identity(workspace: Path) -> tuple[int, int] | None:
    """Create the workspace if missing; as root, the uid/gid commands run as (its owner)."""
    workspace.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    st = workspace.stat()
    if st.st_uid == 0:
        # Commands never run as root; the workspace belongs to the sandbox user (workspace.py).
        os.chown(workspace, SANDBOX_UID, SANDBOX_UID)
        return SANDBOX_UID, SANDBOX_UID
    return st.st_uid, st.st_gid


def _tasks_of(uid: int) -> int:
    """How many tasks (threads included) run as `uid`: RLIMIT_NPROC counts them all."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _data_fd(content: str | bytes) -> int:
    """A pipe holding `content` (small: it fits the pipe buffer), for bwrap's --ro-bind-data
    and --seccomp."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, content.encode() if isinstance(content, str) else content)
    finally:
        os.close(write_end)
    return read_end


def _etc(uid: int, gid: int, network: bool) -> tuple[list[str], dict[str, str]]:
    """/etc inside: a few host files (the loader's, certificates) and a made-up passwd/group."""
    argv = ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC_ALWAYS + (_ETC_NETWORK if network else []):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    files = {
        "/etc/passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"agent:x:{uid}:{gid}:agent:{WORKSPACE_MOUNT}:/bin/sh\n",
        "/etc/group": f"root:x:0:\nagent:x:{gid}:\n",
    }
    if not network:
        files["/etc/hosts"] = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
    return argv, files


@functools.cache
def _disable_userns(bwrap: str) -> list[str]:
    """`--disable-userns` (bubblewrap 0.8+): no nested user namespaces inside the sandbox."""
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--disable-userns"] if "--disable-userns" in usage.stdout + usage.stderr else []


def _drop_argv(setpriv: str, uid: int, gid: int) -> list[str]:
    """setpriv's arguments to become uid/gid with no groups, no capabilities, no new privileges."""
    ids = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    return [setpriv, *ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _bwrap_argv(
    bwrap: str, workspace: Path, uid: int, gid: int, network: bool, drop: str | None
) -> tuple[list[str], dict[str, str]]:
    """bwrap's options. With `drop` (setpriv, when we are root) bwrap runs as root without a
    user namespace, so it can reach any workspace, and setpriv drops to uid/gid inside;
    otherwise bwrap runs unprivileged in a user namespace of its own."""
    argv = [bwrap]
    if drop:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        argv += [] if network else ["--unshare-net"]
    else:
        argv += ["--unshare-all", "--unshare-user", *_disable_userns(bwrap)]
        argv += ["--share-net"] if network else []
    argv += ["--die-with-parent", "--new-session", "--hostname", "agentlog", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    etc, files = _etc(uid, gid, network)
    argv += etc
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(TMP_BYTES),
        "--tmpfs",
        "/tmp",
    ]
    argv += ["--bind", str(workspace), WORKSPACE_MOUNT, "--chdir", WORKSPACE_MOUNT]
    return argv, files


def _prepare(command: str, workspace: Path, ctx: ToolContext) -> _Launch | str:
    """How to run `command` here (the workspace made ready), or why it cannot run."""
    settings = ctx.settings
    ids = _identity(workspace)
    shell = find_program("bash") or "/bin/sh"
    bwrap = find_program("bwrap")
    setpriv = find_program("setpriv")
    prlimit = find_program("prlimit")
    uid, gid = ids or (os.getuid(), os.getgid())
    # RLIMIT_NPROC counts every task of the uid (other commands', and ours when not root), so
    # the limit is what runs as that uid now plus what this command may start.
    limit = _tasks_of(uid) + settings.bash_max_processes
    memory = settings.bash_max_memory_bytes
    # No single file may outgrow the workspace's quota (the total is checked after the command).
    fsize = settings.workspace_max_bytes
    prefix = [prlimit, f"--nproc={limit}", f"--as={memory}", f"--fsize={fsize}"] if prlimit else []
    popen: dict[str, Any] = {}
    if not prlimit:

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        popen["preexec_fn"] = limits
    drop = setpriv if ids is not None else None
    if ids is not None and not setpriv:
        # No setpriv: drop before exec (RLIMIT_NPROC does not bind root).
        popen.update(user=uid, group=gid, extra_groups=[])
    tail = [*(_drop_argv(drop, uid, gid) if drop else []), shell, "-c", command]
    if bwrap is None:
        if not settings.bash_allow_unsandboxed:
            return UNAVAILABLE
        env = {"PATH": SANDBOX_PATH, "HOME": str(workspace), "LANG": "C.UTF-8"}
        return _Launch(prefix, tail, str(workspace), env, popen=popen)
    argv, files = _bwrap_argv(bwrap, workspace, uid, gid, ctx.allow_network, drop)
    env = {"PATH": SANDBOX_PATH, "HOME": WORKSPACE_MOUNT, "LANG": "C.UTF-8"}
    launch = _Launch([*prefix, *argv], tail, None, env, files, popen, sandboxed=True)
    launch.seccomp = seccomp.program()
    launch.cgroup = _cgroup(ctx)
    return launch


def _cgroup(ctx: ToolContext) -> cgroups.Command | None:
    """A cgroup for the command, with its limits, where this host gives us cgroups."""
    settings = ctx.settings
    host = cgroups.probe(settings.bash_cgroup)
    if isinstance(host, cgroups.Unavailable):
        return None
    limits = cgroups.Limits(settings.bash_max_memory_bytes, settings.bash_max_processes, settings.bash_cpus)
    try:
        return cgroups.Command.make(host, limits)
    except OSError as exc:
        log.warning("Bash: no cgroup for this command (%s); per-process limits only", exc)
        return None


def _joining(fds: list[int], then: Any) -> Any:
    """The child's last act before exec: move itself into the command's cgroup (writing "0"
    to descriptors opened by the parent, nothing else), then `then` (rlimits)."""

    def preexec() -> None:
        for fd in fds:
            os.write(fd, b"0")
        if then is not None:
            then()

    return preexec


def _kill_group(pgid: int) -> None:
    """SIGKILL the command's process group; bwrap's death takes its pid namespace with it."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _execute(launch: _Launch, limit_s: float, cap: int) -> _Outcome:
    """Run to completion, a timeout or a flood of output; whatever happens (cancellation
    too), the process group is killed before this returns."""
    loop = asyncio.get_running_loop()
    data_fds: list[int] = []
    procs: list[int] = []
    read_end, write_end = os.pipe()
    try:
        argv = list(launch.argv)
        for dest, content in launch.data.items():
            data_fds.append(_data_fd(content))
            argv += ["--perms", "0644", "--ro-bind-data", str(data_fds[-1]), dest]
        if launch.seccomp is not None:
            data_fds.append(_data_fd(launch.seccomp))
            argv += ["--seccomp", str(data_fds[-1])]
        popen = dict(launch.popen)
        if launch.cgroup is not None:
            procs = launch.cgroup.open_procs()
            popen["preexec_fn"] = _joining(procs, popen.get("preexec_fn"))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *launch.tail,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            cwd=launch.cwd,
            env=launch.env,
            pass_fds=data_fds,
            start_new_session=True,
            **popen,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
        for fd in data_fds + procs:
            os.close(fd)
    sink = _Sink(cap, loop)
    pipe = os.fdopen(read_end, "rb", buffering=0)
    transport: asyncio.BaseTransport | None = None
    try:
        transport, _ = await loop.connect_read_pipe(lambda: sink, pipe)
        exited = asyncio.ensure_future(proc.wait())
        flood = asyncio.ensure_future(sink.flooded.wait())
        try:
            first = asyncio.FIRST_COMPLETED
            done, _ = await asyncio.wait({exited, flood}, timeout=limit_s, return_when=first)
        finally:
            exited.cancel()
            flood.cancel()
        _kill_group(proc.pid)
        await proc.wait()
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sink.closed), _DRAIN_GRACE_S)
    finally:
        _kill_group(proc.pid)
        if transport is not None:
            transport.close()
        else:
            pipe.close()
        if proc.returncode is None:
            await proc.wait()
    ooms = launch.cgroup.oom_kills() if launch.cgroup is not None else 0
    return _Outcome(bytes(sink.head), sink.total, proc.returncode, not done, sink.flooded.is_set(), ooms)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _render(outcome: _Outcome, timeout: float, cap: int, settings: Settings) -> ToolOutput:
    """The text the model reads: output, then notes on truncation, limits, timeout and exit status."""
    text = outcome.head.decode("utf-8", errors="replace")
    notes = []
    if outcome.oom_kills:
        notes.append(
            f"[memory limit reached: the command's processes together may use"
            f" {settings.bash_max_memory_bytes} bytes; {outcome.oom_kills} process(es) killed]"
        )
    if outcome.flooded:
        notes.append(
            f"[output truncated: the command wrote more than {FLOOD_LIMIT_BYTES} bytes and was "
            f"stopped; showing the first {cap}]"
        )
    elif outcome.total > len(outcome.head):
        notes.append(f"[output truncated: {outcome.total} bytes, showing the first {len(outcome.head)}]")
    code = outcome.returncode or 0
    if outcome.timed_out:
        notes.append(f"[timed out after {timeout:g} s]")
    elif outcome.flooded:
        pass
    elif code == -signal.SIGXFSZ:
        notes.append(f"[killed: a file reached the workspace quota of {settings.workspace_max_bytes} bytes]")
    elif code < 0:
        notes.append(f"[killed by signal {_signal_name(-code)}]")
    elif code:
        notes.append(f"[exit code {code}]")
    is_error = outcome.timed_out or outcome.flooded or code != 0 or outcome.oom_kills > 0
    if text and notes and not text.endswith("\n"):
        text += "\n"
    text += "\n".join(notes)
    return ToolOutput(text or "(no output)", is_error=is_error)


class Bash:
    """Runs a shell command in the session's workspace, sandboxed by bubblewrap."""

    name = "Bash"
    description = (
        "Runs a command with bash in a sandbox and returns its output (stdout and stderr together). "
        f"The working directory is {WORKSPACE_MOUNT}, the session's workspace: it is read-write and its "
        "files persist between calls (the file tools see the same files). Everything else is read-only "
        "(/usr with its programs) or private to the call (/tmp is empty each time). There is no network "
        "access unless the session allows it, and no credentials in the environment. Each call starts "
        "a fresh shell (no variables or cd carry over). There is a time limit (`timeout`, in seconds, "
        "can only shorten it), limits on processes, memory and CPU, and a disk quota on the workspace; "
        "processes left in the background are killed when the command returns; long output is cut. "
        "A non-zero exit status is reported as an error."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "the command line to run with bash -c"},
            "timeout": {"type": "number", "description": "time limit in seconds (at most the default)"},
        },
        "required": ["command"],
    }

    def __init__(self) -> None:
        # Commands running at once in this executor (bash_concurrency), made on first use.
        self.slots: asyncio.Semaphore | None = None

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        command = tool_input.get("command")
        return "read" if isinstance(command, str) and classify(command) == "read" else "write"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        command = tool_input.get("command")
        if not isinstance(command, str) or not command.strip():
            return ToolOutput("Bash needs a non-empty string `command` input", is_error=True)
        limit = ctx.settings.bash_timeout_s
        asked = tool_input.get("timeout", limit)
        if isinstance(asked, bool) or not isinstance(asked, int | float) or not asked > 0:
            return ToolOutput("`timeout` must be a positive number of seconds", is_error=True)
        timeout = min(float(asked), limit)
        if self.slots is None:
            self.slots = asyncio.Semaphore(ctx.settings.bash_concurrency)
        async with self.slots:
            out = await self._run(command, timeout, ctx)
        return await _within_quota(out, ctx)

    async def _run(self, command: str, limit_s: float, ctx: ToolContext) -> ToolOutput:
        try:
            launch = await asyncio.to_thread(_prepare, command, ctx.workspace.absolute(), ctx)
        except OSError as exc:
            return ToolOutput(f"Bash cannot prepare the workspace: {exc}", is_error=True)
        if isinstance(launch, str):
            return ToolOutput(launch, is_error=True)
        cap = ctx.settings.bash_max_output_bytes
        try:
            outcome = await _execute(launch, limit_s, cap)
        except (OSError, subprocess.SubprocessError) as exc:
            return ToolOutput(f"Bash could not start the command: {exc}", is_error=True)
        finally:
            if launch.cgroup is not None:
                await asyncio.to_thread(launch.cgroup.remove)
        if _sandbox_failed(launch, outcome):
            said = outcome.head.decode(errors="replace").rstrip()
            log.error("Bash: bubblewrap could not start its sandbox: %s", said[:500])
            return ToolOutput(f"{said}\n{SANDBOX_FAILED}", is_error=True)
        return _render(outcome, limit_s, cap, ctx.settings)


async def _within_quota(out: ToolOutput, ctx: ToolContext) -> ToolOutput:
    """The command's output, or with a note (and as an error) when it left the workspace
    over its quota: the model learns it must remove files, and Write and Edit refuse more."""
    limit = ctx.settings.workspace_max_bytes
    used = await asyncio.to_thread(quota.usage, ctx.workspace)
    if not used.over(limit) or not isinstance(out.content, str):
        return out
    return ToolOutput(f"{out.content}\n[workspace quota: {used.describe(limit)}]", is_error=True)


def _sandbox_failed(launch: _Launch, outcome: _Outcome) -> bool:
    """Whether bwrap itself failed (before the command ran), as it does in a container that
    lacks what it needs."""
    return launch.sandboxed and outcome.returncode == 1 and outcome.head.startswith(b"bwrap: ")
