"""Entry point of one worker role: wires settings, the log, Postgres and the worker together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Literal

import psycopg

from eventstore import log as kafka_log
from eventstore import store
from eventstore.settings import Settings
from observe import instances, tracing
from observe.metrics import Metrics
from processors import failpoints
from processors.model import router
from processors.model_worker import ModelWorker
from processors.projector import Projector
from processors.reactor_worker import ReactorWorker
from processors.subagent_worker import SubagentWorker
from processors.tool_worker import ToolWorker
from processors.tools.discovery import load_registry
from processors.tools.registry import Registry, default_registry

Role = Literal["reactor", "model", "tools", "subagents", "projector"]
ROLES: tuple[Role, ...] = ("reactor", "model", "tools", "subagents", "projector")

log = logging.getLogger(__name__)


async def wait_for_postgres(url: str, stop: asyncio.Event, first: float = 0.2, most: float = 5.0) -> bool:
    """Wait until Postgres answers, retrying with a backoff (`first` doubling to `most` seconds),
    each failure logged: a worker started while the database is down waits for it instead of
    crash-looping. False if a stop came first."""
    delay = first
    while not stop.is_set():
        try:
            conn = await store.connect(url)
        except psycopg.OperationalError as exc:
            log.warning("postgres does not answer (%s); trying again in %.1fs", type(exc).__name__, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, most)
        else:
            await conn.close()
            return True
    return False


async def run_role(
    role: Role,
    settings: Settings,
    stop: asyncio.Event | None = None,
    on_start: Callable[[object], None] | None = None,
    tools: Registry | None = None,
) -> None:
    """Run one worker role until `stop` is set (or, without one, until SIGTERM/SIGINT).
    The roles that know tools load the built-in and the users' ones (unless given `tools`)."""
    failpoints.arm(settings.failpoints)
    if tools is None and role in ("reactor", "model", "tools"):
        tools = load_registry(settings.tool_modules)  # a bad tool stops the start, here
    tracing.configure(settings.otlp_endpoint)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if not await wait_for_postgres(settings.database_url, stop):
        return
    await store.migrate(settings.database_url)
    await kafka_log.ensure_topics(settings)
    epoch = await kafka_log.log_epoch(settings)
    kafka = kafka_log.KafkaLog(settings)
    await kafka.vault.check()  # every role reads the log: without its key, a clear stop
    await kafka.start()
    conn = await store.connect(settings.database_url)
    model = router.from_settings(settings) if role == "model" else None
    metrics = Metrics(instances.instance_id(settings, role), role)
    paused = False

    def build(conn: store.AsyncConn) -> Worker:
        if role == "reactor":
            approve = tools.needing_approval() if tools is not None else frozenset()
            sizes = (tools or default_registry()).definition_tokens()
            made: Worker = ReactorWorker(settings, kafka, conn, epoch, approve=approve, tool_tokens=sizes)
        elif role == "model":
            assert model is not None
            made = ModelWorker(
                settings, kafka, conn, epoch, model=model, tools=tools, concurrency=settings.model_concurrency
            )
        elif role == "tools":
            made = ToolWorker(
                settings, kafka, conn, epoch, tools=tools, concurrency=settings.tool_concurrency
            )
        elif role == "subagents":
            made = SubagentWorker(settings, kafka, conn, epoch)
        else:
            made = Projector(settings, kafka, conn, epoch)
        made.metrics = metrics
        return made

    try:
        worker = build(conn)
        # /readyz: running, until a stop begins (then draining: no longer counted available),
        # not paused for Postgres, and no gap between the log and Postgres in what it owns.
        async with instances.presence(
            settings, metrics, lambda: not stop.is_set() and not paused and worker.ready()
        ) as metrics_url:
            log.info(
                "%s started (epoch %s, instance %s, metrics %s)", role, epoch, metrics.instance, metrics_url
            )
            while True:
                if on_start is not None:
                    on_start(worker)
                try:
                    await worker.run(stop)
                    return
                except Exception as exc:
                    lost = postgres_lost(exc)
                    if stop.is_set() or lost is None:
                        raise
                # Pause in place rather than exit and crash-loop: nothing is consumed meanwhile,
                # and what was not done is read again from the offsets stored in Postgres.
                paused = True
                log.error("%s: postgres went away (%s); paused until it answers again", role, lost)
                with contextlib.suppress(Exception):
                    await conn.close()
                reconnected = await _reconnect(settings.database_url, stop)
                if reconnected is None:
                    return
                conn = reconnected
                worker = build(conn)
                paused = False
                log.warning("%s: postgres answers again; resuming from the stored offsets", role)
    finally:
        if model is not None:
            await model.aclose()
        await conn.close()
        await kafka.stop()


async def _reconnect(url: str, stop: asyncio.Event) -> store.AsyncConn | None:
    """A new connection once Postgres answers again (None: a stop came first)."""
    while await wait_for_postgres(url, stop):
        try:
            return await store.connect(url)
        except psycopg.OperationalError:  # gone again between the two: wait on
            continue
    return None


Worker = ReactorWorker | ModelWorker | ToolWorker | SubagentWorker | Projector


def postgres_lost(exc: BaseException) -> str | None:
    """What says a worker stopped because Postgres went away (its connection lost or refused),
    found in the chain of causes of `exc`; None if it stopped for another reason."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, psycopg.OperationalError) and _connection_lost(cause):
            return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")
        cause = cause.__cause__ or cause.__context__
    return None


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """A connection that failed or was closed under it (no SQLSTATE: the client saw it go;
    class 08; 57P01-57P03: shut down, crashed, starting), not a query that failed (57014, a
    cancelled statement, is operational too): that one would fail again at once on resuming."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
