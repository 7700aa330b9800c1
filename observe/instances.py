"""The fleet registry: each process serves its metrics and heartbeats a row in `instances`.

`agentlog top` (and Prometheus service discovery) read the rows whose heartbeat is recent;
a process that stops cleanly deletes its row, one that dies is left out once its heartbeat
is older than a few intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import start_http_server

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


def serve_metrics(metrics: Metrics, host: str, port: int) -> tuple[str, Any]:
    """Serve the registry over HTTP on host:port (0: a free port); returns its URL and a stopper."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
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
async def presence(settings: Settings, metrics: Metrics) -> AsyncIterator[str | None]:
    """Serve the metrics and keep this instance registered while the block runs; yields the
    metrics URL. Registration is best effort: the process runs even if Postgres is away."""
    if not settings.metrics_enabled:
        yield None
        return
    metrics_url, stop_server = serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
    beat = None
    try:
        beat = asyncio.create_task(_beat(settings, metrics, metrics_url))
        yield metrics_url
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        with contextlib.suppress(Exception):  # a fresh connection: the beat's may be mid-query
            async with await store.connect(settings.database_url) as conn:
                await unregister(conn, metrics.instance)
        await asyncio.to_thread(stop_server)


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
