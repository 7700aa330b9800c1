"""What the routes share: dependencies, path types, the session settings a client may set."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Path, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import scope
from api.auth import owned
from api.live import Live
from api.problems import Problem
from eventstore import events as ev
from eventstore import ids, reads, untrusted
from eventstore.config import SessionConfig, TurnPolicy
from eventstore.mcp import McpServer, check_names
from eventstore.outbox import DurableLog
from eventstore.settings import Settings
from eventstore.store import AsyncConn
from observe import tracing

if TYPE_CHECKING:
    from api.agents import Agents

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
SessionId = Annotated[str, Path(min_length=1, max_length=200, pattern=SESSION_ID_PATTERN)]
# The widest values the projection's columns hold (sessions.ttl_s is a Postgres integer,
# sessions.token_budget a bigint): a setting past them would be accepted here and then
# dead-lettered by the projector, the session running with settings no one can read back.
MAX_TTL_S = 2**31 - 1
MAX_TOKEN_BUDGET = 2**63 - 1
PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {**PROBLEM, "description": "no or unknown token"},
    429: {**PROBLEM, "description": "a limit of the tenant (requests, turns, tokens): see Retry-After"},
    403: {**PROBLEM, "description": "the service token, which only starts sub-agents"},
}


def deps(request: Request) -> tuple[Any, DurableLog, Settings]:
    state = request.app.state
    return state.pool, state.kafka, state.settings


def agents_of(request: Request) -> Agents:
    """The agents file's definitions, read when the api started (`api.agents`)."""
    catalog: Agents = request.app.state.agents
    return catalog


def live_of(request: Request) -> Live:
    """The process's listener (`api.live`)."""
    live: Live = request.app.state.live
    return live


def no_nul(value: Any, where: str = "") -> Any:
    """Refuse NUL characters, lone surrogates and non-finite numbers (`1e400`, `NaN`, which
    Python's JSON parser lets through) anywhere in a value: Postgres cannot store them in
    text or jsonb, and a value that cannot be recorded must be refused here, not
    dead-lettered later."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}{where}")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"must not contain NUL characters{where}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"must be valid Unicode (a lone surrogate at {exc.start}){where}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key, where)
            no_nul(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            no_nul(item, where)
    return value


class SessionSettings(BaseModel):
    """A session's settings, fixed when it starts."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _recordable(cls, value: Any) -> Any:
        return no_nul(value)

    model: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=100_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: TurnPolicy | None = Field(
        default=None, description="what a message does while a turn runs: enqueue, reject or interrupt"
    )
    max_steps: int | None = Field(default=None, ge=1, le=1000, description="model calls per turn")
    token_budget: int | None = Field(
        default=None, ge=1, le=MAX_TOKEN_BUDGET, description="tokens per session"
    )
    tools: list[str] | None = Field(default=None, max_length=100, description="tool names allowed")
    approvals: list[str] | None = Field(
        default=None, max_length=100, description="tool names whose calls wait for a human's approval"
    )
    approve_after_untrusted: list[str] | None = Field(
        default=None,
        max_length=100,
        description="tool names whose calls wait for a human's approval once untrusted content (a"
        " WebFetch or MCP result) entered the session",
    )
    webfetch_allow: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = Field(
        default=None,
        max_length=100,
        description="hosts (or *.domain) WebFetch may reach without approval; elsewhere it waits for"
        " one. Within the deployment's list (AGENTLOG_WEBFETCH_ALLOW), if it has one",
    )
    ttl_seconds: int | None = Field(
        default=None, ge=1, le=MAX_TTL_S, description="idle seconds before expiry"
    )
    max_tokens: int | None = Field(default=None, ge=1, le=128_000, description="per model call")
    context_window: int | None = Field(
        default=None,
        ge=1024,
        le=10_000_000,
        description="tokens a model call may fill (default: the model's window); a longer session"
        " is compacted: older turns summarised, old tool results cleared",
    )
    mcp_servers: dict[str, McpServer] | None = Field(
        default=None,
        max_length=20,
        description="MCP servers whose tools the session is offered (`server__tool`), besides the"
        ' deployment\'s: a name -> {"command": [...], "env": {...}} (stdio)'
        ' or {"url": ..., "headers": {...}}',
    )

    @field_validator("mcp_servers")
    @classmethod
    def _servers_recordable(cls, servers: dict[str, McpServer] | None) -> dict[str, McpServer] | None:
        if servers is not None:
            check_names(servers)
            for server in servers.values():
                no_nul(server.model_dump())
        return servers


def session_config(
    body: SessionSettings, settings: Settings, base: SessionConfig | None = None
) -> SessionConfig:
    """The one place a request becomes a session's config: the settings the client gave (an
    agent's among them, `api.agents`) over `base`, a fork's source's config, or else the
    server's defaults. A setting given as null is the server's default."""
    defaults = settings.session_defaults()
    update: dict[str, Any] = {}
    for name in body.model_fields_set:
        key = "ttl_s" if name == "ttl_seconds" else name
        value = getattr(body, name)
        update[key] = getattr(defaults, key) if value is None else value
    if body.webfetch_allow is not None:  # within the deployment's list, if it has one
        update["webfetch_allow"] = untrusted.narrowed(body.webfetch_allow, settings.webfetch_allow or None)
    config = (base or defaults).updated(update)
    _allowed_servers(config, settings)
    return config


def session_started(
    session_id: str,
    tenant: str,
    body: SessionSettings,
    settings: Settings,
    base: SessionConfig | None = None,
    **extra: Any,
) -> ev.SessionStarted:
    """The first event of a session, from a client's settings (`session_config`); `extra` are
    other fields of its payload (the agent it started from, a fork's lineage, ...)."""
    return ev.session_started(session_id, session_config(body, settings, base), tenant_id=tenant, **extra)


def _allowed_servers(config: SessionConfig, settings: Settings) -> None:
    """The session's own MCP servers: one that runs a command only where the deployment allows it."""
    for name, server in config.mcp_servers.items():
        if server.command is not None and not settings.mcp_session_commands:
            raise Problem(
                422,
                "Invalid request",
                f"mcp_servers.{name}.command: this deployment runs no command a session names"
                " (AGENTLOG_MCP_SESSION_COMMANDS); give the server a url",
                errors=[
                    {
                        "field": f"mcp_servers.{name}.command",
                        "location": "body",
                        "message": "stdio servers of a session are not allowed here",
                    }
                ],
            )


async def require_session(pool: Any, session_id: str, tenant: str) -> str:
    """The status of the (stored) session id; 404 unless the caller's tenant owns it."""
    async with scope.connection(pool, tenant) as conn:
        status = await owned(conn, session_id, tenant)
    if status is None:
        raise not_found(tenant, session_id)
    return status


@asynccontextmanager
async def owned_session(pool: Any, tenant: str, session_id: str) -> AsyncIterator[AsyncConn]:
    """A connection acting for the tenant, once it is known to own the (stored) session id;
    404 if it does not. The check and the reads that follow share a transaction."""
    async with scope.connection(pool, tenant) as conn:
        if await owned(conn, session_id, tenant) is None:
            raise not_found(tenant, session_id)
        yield conn


def not_found(tenant: str, session_id: str) -> Problem:
    """The one answer for a session the tenant does not have, whoever else may have its id."""
    return Problem(404, "Session not found", f"no session {ids.client_session_id(tenant, session_id)}")


async def wait_for_turn(
    pool: Any, live: Live, tenant: str, session_id: str, turn_id: str, wait: float
) -> dict[str, Any] | None:
    """The turn once it finished, read again when the projection says it finished (and every
    few seconds anyway); None when `wait` runs out first."""
    deadline = time.monotonic() + wait
    with live.subscribe(session_id, turn_id=turn_id) as sub:
        while True:
            keys = {"sid": session_id, "tid": turn_id}
            found = await scope.rows(pool, tenant, reads.TURN_VIEW, keys, dict_row)
            turn = reads.turn_view_of(found[0]) if found else None
            if turn is not None and turn["status"] in ("completed", "failed"):
                return dict(scope.client_ids(tenant, turn))
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await sub.wait(min(left, live.poll_interval()))


def traced(events: list[ev.Event]) -> list[ev.Event]:
    """The events, in the trace of the request appending them (the turn's trace hangs from it)."""
    parent = tracing.current()
    if parent is None:
        return events
    return [e if e.traceparent is not None else e.model_copy(update={"traceparent": parent}) for e in events]
