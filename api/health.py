"""Whether the api's dependencies answer: Postgres (a query on a connection of its own, so a
busy pool never reads as an outage) and the broker (a TCP connect), each within a short
timeout, checked at most once per `ttl` however many ask. `/readyz` reports it; `Gate`
answers 503 at once while a dependency the request needs is down, instead of a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request

from api import problems

log = logging.getLogger(__name__)

APPLICATION_NAME = "agentlog-api-health"
TTL_S = 1.0
TIMEOUT_S = 0.5
# A check that only ran slow (a busy machine, a connection being set up) reads as down once
# the next one is slow too: one slow answer must not turn every request away for a second.
# A refused or broken connection reads as down at once.
SLOW_STRIKES = 2
# Setting up the check's connection (a backend forked) is not what is checked: on a loaded
# machine it alone can take longer than TIMEOUT_S, and every check would then start over.
CONNECT_TIMEOUT_S = 3.0
# What a client is told to wait before it asks again.
RETRY_AFTER = {"Retry-After": "1"}
# Methods that only read: answered from the projection while the broker is down.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Readiness:
    """What is down, each with the reason for the log (None: it answers)."""

    database: str | None = None
    broker: str | None = None

    @property
    def ready(self) -> bool:
        return self.database is None and self.broker is None


class Health:
    """The cached readiness of Postgres and the broker."""

    def __init__(
        self,
        database_url: str,
        bootstrap: str,
        ttl: float = TTL_S,
        timeout: float = TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ):
        self.database_url = database_url
        self.brokers = [_host_port(server) for server in bootstrap.split(",") if server.strip()]
        self.ttl = ttl
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._slow = 0
        self._known: Readiness | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def readiness(self) -> Readiness:
        """The readiness as of at most `ttl` ago: one check at a time; while it runs, the
        others have the last known answer (only the very first ones wait for it)."""
        if self._known is not None and (self._lock.locked() or time.monotonic() - self._checked < self.ttl):
            return self._known
        async with self._lock:
            if self._known is None or time.monotonic() - self._checked >= self.ttl:
                was, self._known = self._known, Readiness(await self._database(), await self._broker())
                self._checked = time.monotonic()
                if not self._known.ready and (was is None or was.ready):
                    log.warning("dependency down, answering 503: %s", self._known)
                elif self._known.ready and was is not None and not was.ready:
                    log.warning("dependencies answer again")
            return self._known

    def forget(self) -> None:
        """A request just failed on a dependency: the next one checks again."""
        self._checked = float("-inf")

    async def close(self) -> None:
        """Close the check's own connection."""
        if self._conn is not None:
            await self._conn.close()

    async def _database(self) -> str | None:
        try:
            if self._conn is None or self._conn.closed:
                async with asyncio.timeout(self.connect_timeout):
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True, application_name=APPLICATION_NAME
                    )
            async with asyncio.timeout(self.timeout):
                await self._conn.execute("SELECT 1")
        except TimeoutError as exc:
            await self._drop()
            self._slow += 1
            if self._slow < SLOW_STRIKES:
                log.info("postgres answered slower than %.1f s (%d in a row)", self.timeout, self._slow)
                return None
            return f"postgres: {type(exc).__name__}: {exc}".strip()
        except Exception as exc:
            await self._drop()
            return f"postgres: {type(exc).__name__}: {exc}".strip()
        self._slow = 0
        return None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _broker(self) -> str | None:
        reasons = []
        for host, port in self.brokers:
            try:
                async with asyncio.timeout(self.timeout):
                    _, writer = await asyncio.open_connection(host, port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return None
            except (OSError, TimeoutError) as exc:
                reasons.append(f"{host}:{port}: {type(exc).__name__}")
        return "broker: " + ", ".join(reasons)


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)


class Gate:
    """ASGI middleware: while Postgres is down, every /v1 request; while the broker is down,
    every /v1 request that writes, is answered 503 problem+json with `Retry-After` at once."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        health: Health | None = getattr(scope["app"].state, "health", None) if "app" in scope else None
        if scope["type"] != "http" or health is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        known = await health.readiness()
        if known.database is not None:
            detail = "the database does not answer; try again shortly"
        elif known.broker is not None and scope["method"] not in READS:
            detail = "the event log does not answer; try again shortly"
        else:
            await self.app(scope, receive, send)
            return
        response = problems.problem_response(
            Request(scope), 503, "Service unavailable", detail, headers=RETRY_AFTER
        )
        await response(scope, receive, send)
