"""The fleet registry: each process serves its metrics and heartbeats a row in `instances`.

`agentlog top` (and Prometheus service discovery) read the rows whose heartbeat is recent;
a process that stops cleanly deletes its row, one that dies is left out once its heartbeat
is older than a few intervals.

The same HTTP server answers Kubernetes' probes: `/healthz` (200 while the process's event
loop turns: a loop stuck longer than LOOP_STALL_S answers 503, and the pod is restarted)
and `/readyz` (200 while alive and the caller's readiness says so; 503 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from eventstore import store
from eventstore.settings import Settings
from observe.metrics import Metrics, version

log = logging.getLogger(__name__)


def instance_id(settings: Settings, role: str) -> str:
    """The configured instance id, or one made of the role, the host and the pid."""
    return settings.instance or f"{role}-{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Instance:
    """A registered process, as `agentlog top` sees it."""

    instance_id: str
    role: str
    host: str
    pid: int
    metrics_url: str | None
    version: str
    started_at: datetime
    heartbeat_at: datetime


# The event loop ticks this often; a tick older than LOOP_STALL_S means the loop is stuck.
TICK_S = 1.0
LOOP_STALL_S = 30.0


class Health:
    """What /healthz and /readyz answer: the event loop's last tick, and the caller's
    readiness (None: ready whenever alive). Read from the HTTP server's threads."""

    def __init__(self, ready: Callable[[], bool] | None = None, stall_s: float = LOOP_STALL_S) -> None:
        self.readiness = ready
        self.stall_s = stall_s
        self.last_tick = time.monotonic()

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.stall_s

    def ready(self) -> bool:
        if not self.alive():
            return False
        try:
            return self.readiness is None or bool(self.readiness())
        except Exception:  # a readiness that fails says: not ready
            log.warning("readiness check failed", exc_info=True)
            return False


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape or probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _wsgi(metrics: Metrics, health: Health) -> Callable[..., Iterable[bytes]]:
    """/healthz and /readyz from `health`; every other path, the metrics."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, status = health.alive(), ("ok", "event loop stalled")
        else:
            ok, status = health.ready(), ("ready", "not ready")
        body = json.dumps({"status": status[0] if ok else status[1]}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK" if ok else "503 Service Unavailable", headers)
        return [body]

    return app


def serve_metrics(metrics: Metrics, host: str, port: int, health: Health | None = None) -> tuple[str, Any]:
    """Serve the registry (and the probes) over HTTP on host:port (0: a free port); returns
    its URL and a stopper."""
    # The address family of the host (an IPv6 address needs AF_INET6), as http.server does.
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    # Without a Health of the caller's (one that a task ticks), /healthz cannot tell a stall.
    app = _wsgi(metrics, health or Health(stall_s=float("inf")))
    server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    # Listening on every interface: others reach it by this host's name.
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:  # an IPv6 address
        shown = f"[{shown}]"
    url = f"http://{shown}:{server.server_port}/metrics"

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return url, stop


async def register(conn: store.AsyncConn, metrics: Metrics, metrics_url: str | None) -> None:
    """Insert or refresh this instance's row."""
    await conn.execute(
        "INSERT INTO instances (instance_id, role, host, pid, metrics_url, version)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (instance_id) DO UPDATE SET role = excluded.role, host = excluded.host,"
        " pid = excluded.pid, metrics_url = excluded.metrics_url, version = excluded.version,"
        " started_at = now(), heartbeat_at = now()",
        (metrics.instance, metrics.role, socket.gethostname(), os.getpid(), metrics_url, version()),
    )


async def heartbeat(conn: store.AsyncConn, instance: str) -> bool:
    """Refresh the heartbeat; False if the row was gone (someone pruned it)."""
    cur = await conn.execute("UPDATE instances SET heartbeat_at = now() WHERE instance_id = %s", (instance,))
    return cur.rowcount > 0


async def unregister(conn: store.AsyncConn, instance: str) -> None:
    """Delete this instance's row (a clean stop)."""
    await conn.execute("DELETE FROM instances WHERE instance_id = %s", (instance,))


async def live(conn: store.AsyncConn, within_s: float) -> list[Instance]:
    """The instances whose heartbeat is at most `within_s` seconds old, by role and id."""
    cur = await conn.execute(
        "SELECT instance_id, role, host, pid, metrics_url, version, started_at, heartbeat_at"
        " FROM instances WHERE heartbeat_at > now() - make_interval(secs => %s)"
        " ORDER BY role, instance_id",
        (within_s,),
    )
    return [Instance(*row) for row in await cur.fetchall()]


@contextlib.asynccontextmanager
async def presence(
    settings: Settings, metrics: Metrics, ready: Callable[[], bool] | None = None
) -> AsyncIterator[str | None]:
    """Serve the metrics and the probes (`ready`: what /readyz adds to the loop being alive)
    and keep this instance registered while the block runs; yields the metrics URL.
    Registration is best effort: the process runs even if Postgres is away."""
    if not settings.metrics_enabled:
        yield None
        return
    health = Health(ready)
    metrics_url, stop_server = serve_metrics(metrics, settings.metrics_host, settings.metrics_port, health)
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.append(asyncio.create_task(_tick(health)))
        tasks.append(asyncio.create_task(_beat(settings, metrics, metrics_url)))
        yield metrics_url
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # a fresh connection: the beat's may be mid-query
            async with await store.connect(settings.database_url) as conn:
                await unregister(conn, metrics.instance)
        await asyncio.to_thread(stop_server)


async def _tick(health: Health) -> None:
    """Show the probes that the event loop turns."""
    while True:
        health.tick()
        await asyncio.sleep(TICK_S)


async def _beat(settings: Settings, metrics: Metrics, metrics_url: str) -> None:
    """Register, then heartbeat; a lost connection is opened again on the next beat."""
    conn: store.AsyncConn | None = None
    registered = False
    try:
        while True:
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await store.connect(settings.database_url)
                    await register(conn, metrics, metrics_url)
                elif not await heartbeat(conn, metrics.instance):
                    await register(conn, metrics, metrics_url)  # pruned meanwhile
                registered = True
            except Exception:  # the database is away for a moment: the next beat tries again
                log.warning("instance %s: heartbeat failed", metrics.instance, exc_info=True)
                if conn is not None:
                    await conn.close()
                conn = None
            # Until the first registration succeeds (another process may still be creating
            # the table on a fresh database), try again soon rather than a heartbeat later.
            await asyncio.sleep(settings.heartbeat_s if registered else min(settings.heartbeat_s, 0.5))
    finally:
        if conn is not None:
            await conn.close()
