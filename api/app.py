"""The FastAPI factory and lifespan: one Postgres pool and one log producer per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from api import openapi, problems
from api.routes import approvals, runs, sessions, stream, turns
from eventstore import log as kafka_log
from eventstore import tenants
from eventstore.settings import Settings


class BodyLimit(BaseHTTPMiddleware):
    """Refuse bodies over the configured size with 413 before reading them."""

    def __init__(self, app: Any, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return problems.problem_response(
                request, 413, "Request body too large", f"the limit is {self.limit} bytes"
            )
        return await call_next(request)


def create_app(settings: Settings) -> FastAPI:
    """The api, configured by `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=10, open=False, kwargs={"autocommit": True}
        )
        await pool.open(wait=True, timeout=30)
        kafka = kafka_log.KafkaLog(settings)
        await kafka_log.ensure_topics(settings)
        await kafka.start()
        app.state.pool = pool
        app.state.kafka = kafka
        app.state.settings = settings
        app.state.tokens = tenants.parse_tokens(settings.api_tokens)
        try:
            yield
        finally:
            await kafka.stop()
            await pool.close()

    app = FastAPI(title="agentlog", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    problems.install(app)
    openapi.install(app)
    for module in (sessions, turns, stream, approvals, runs):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Postgres answers and the log producer is connected."""
        try:
            async with request.app.state.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception as exc:
            return problems.problem_response(request, 503, "Not ready", f"postgres: {exc}")
        return JSONResponse({"status": "ready"})

    return app
