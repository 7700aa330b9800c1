"""The FastAPI factory and lifespan: one Postgres pool, one log producer and one listener
(`api.live`) per process."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg_pool import AsyncConnectionPool

from api import agents, health, openapi, problems, quotas, scope, ui
from api.body import BodyLimit
from api.live import Live
from api.routes import approvals, fleet, runs, sessions, stream, turns
from eventstore import log as kafka_log
from eventstore import outbox, tenants
from eventstore.settings import Settings
from observe import instances, tracing
from observe.metrics import Metrics

log = logging.getLogger(__name__)

# The pool's connections and the listener's (`api.live`), as pg_stat_activity names them.
APPLICATION_NAME = "agentlog-api"
POOL_SIZE = 10
# A request waits this long for a pooled connection, then answers 503 with Retry-After: well
# under a client's timeout (60 s), so a lost database is an answer, never a hang.
POOL_TIMEOUT_S = 5.0

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class Observed:
    """Each request: a server span (continuing the caller's `traceparent`, if sent) and the
    metrics by method, route template (never the raw path) and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"  # clients choose it
        sent = next((v for k, v in scope.get("headers", []) if k == b"traceparent"), None)
        caller = tracing.context_of(sent.decode("latin-1") if sent is not None else None)

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.http_duration.labels(method, route).observe(time.monotonic() - started)
            await send(message)

        with tracing.tracer().start_as_current_span(
            method, context=caller, kind=SpanKind.SERVER, record_exception=False
        ) as span:
            try:
                await self.app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.http_requests.labels(method, route, str(status)).inc()
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": status,
                    }
                )
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (0.165+) off: our spans are the one source, so that the
    turn's trace hangs from the request span we stamp on the events."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    off = {
        "tracing": False,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
    }
    return {"telemetry": off}


def create_app(settings: Settings) -> FastAPI:
    """The api, configured by `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=POOL_TIMEOUT_S,
            open=False,
            kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
            # Row-level security binds every query: a login that would bypass it acts as agentlog_api.
            configure=scope.configure,
        )
        await pool.open(wait=True, timeout=30)
        kafka = kafka_log.KafkaLog(settings)
        await kafka_log.ensure_topics(settings)
        await kafka.start()
        live = Live(settings.database_url, deltas=settings.stream_deltas)
        await live.start()
        app.state.pool = pool
        app.state.health = health.Health(settings.database_url, settings.kafka_bootstrap)
        # What the api appends it keeps in Postgres until projected (a lost log loses no ack).
        app.state.kafka = outbox.DurableLog(kafka, pool)
        app.state.live = live
        app.state.settings = settings
        app.state.tokens = tenants.parse_tokens(settings.api_tokens)
        try:
            async with instances.presence(settings, metrics):
                yield
        finally:
            await live.stop()
            await kafka.stop()
            await app.state.health.close()
            await pool.close()

    catalog = agents.load(settings.agents)  # a wrong agents file stops the start, here
    metrics = Metrics(instances.instance_id(settings, "api"), "api")
    tracing.configure(settings.otlp_endpoint)
    app = FastAPI(title="agentlog", version="0.1.0", lifespan=lifespan, **_no_native_telemetry())
    app.state.metrics = metrics
    app.state.agents = catalog
    app.state.quotas = quotas.Quotas.of_settings(settings)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(health.Gate)
    app.add_middleware(Observed, metrics=metrics)
    problems.install(app)
    openapi.install(app)
    for module in (sessions, turns, stream, approvals, runs, fleet):
        # Every /v1 route counts against its tenant's request rate (api.quotas).
        app.include_router(module.router, dependencies=[Depends(quotas.limit_requests)])
    app.include_router(ui.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Postgres and the broker answer (as of at most a second ago)."""
        known = await request.app.state.health.readiness()
        # Anyone may ask: the answer names no host, user or database; the log has the detail.
        for reason, detail in (
            (known.database, "the database does not answer"),
            (known.broker, "the event log does not answer"),
        ):
            if reason is not None:
                log.warning("not ready: %s", reason)
                return problems.problem_response(
                    request, 503, "Not ready", detail, headers=health.RETRY_AFTER
                )
        return JSONResponse({"status": "ready"})

    return app
