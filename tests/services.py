"""Real services for tests: one embedded Postgres per test session, a Tansu broker per stack.

A broker starts in milliseconds, so each test that needs a log gets a fresh one (a fresh
log epoch) and a fresh database on the shared Postgres server.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import psycopg
import uvicorn

from agentlog import devstack
from api.app import create_app
from eventstore import store
from eventstore.events import Usage
from eventstore.settings import Settings
from processors.run import Role, run_role
from processors.tools.registry import Registry


class Broker:
    """A Tansu broker on a free loopback port, stopped by pid."""

    def __init__(self, log_dir: Path) -> None:
        self.port = devstack.free_port()
        self.log_file = open(log_dir / f"broker-{self.port}.log", "ab")
        self.proc = devstack.start_broker(self.port, self.log_file)
        devstack.wait_for_port(self.port)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def workspaces(log_dir: Path) -> Path:
    """A fresh workspace root, on a path the sandbox user (nobody) can reach."""
    root = log_dir / f"ws-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o755)
    for part in [root, *root.parents]:
        if part.stat().st_mode & 0o005 != 0o005:
            part.chmod(part.stat().st_mode | 0o005)
    return root


def create_database(server_uri: str) -> str:
    """A new empty database on the shared server; returns its URI."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return server_uri.replace("/postgres?", f"/{name}?", 1)


@dataclass
class Stack:
    """A broker, a database and whatever workers a test starts, all in this process."""

    settings: Settings
    broker: Broker
    tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=dict)
    workers: dict[str, Any] = field(default_factory=dict)
    api_url: str | None = None

    async def start(
        self, *roles: Role, tools: Registry | None = None, name: str | None = None, **overrides: Any
    ) -> None:
        """Start worker roles as tasks of this event loop (with a tool registry of the test's;
        `name` and setting overrides run a second instance of a role)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        for role in roles:
            stop = asyncio.Event()
            key = name or role

            def keep(worker: object, key: str = key) -> None:
                self.workers[key] = worker

            task = asyncio.create_task(run_role(role, settings, stop, on_start=keep, tools=tools))
            self.tasks[key] = (task, stop)

    async def stop_role(self, role: str) -> None:
        task, stop = self.tasks.pop(role)
        self.workers.pop(role, None)
        stop.set()
        await asyncio.wait_for(task, 30)

    async def start_api(self) -> str:
        port = devstack.free_port()
        config = uvicorn.Config(
            create_app(self.settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        stop = asyncio.Event()

        async def serve() -> None:
            await server.serve()

        task = asyncio.create_task(serve())
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.02)
        self.api_url = f"http://127.0.0.1:{port}"
        self._server = server
        self.tasks["api"] = (task, stop)
        return self.api_url

    async def stop_all(self) -> None:
        if "api" in self.tasks:
            self._server.should_exit = True
            task, _ = self.tasks.pop("api")
            await asyncio.wait_for(task, 30)
        for role in list(self.tasks):
            await self.stop_role(role)

    async def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await store.connect(self.settings.database_url) as conn:
            cur = await conn.execute(query.encode() if not params else query, params or None)
            return await cur.fetchall() if cur.description is not None else []


async def wait_until(predicate: Any, within: float = 30, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy, or fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {value!r})")
        await asyncio.sleep(interval)


async def new_epoch(stack: Stack, log_dir: Path) -> Stack:
    """Stop everything and the broker; the same database with a fresh broker (a new log epoch)."""
    await stack.stop_all()
    stack.broker.stop()
    broker = Broker(log_dir)
    settings = stack.settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    return Stack(settings, broker)


async def projected(stack: Stack, count: int) -> bool:
    """Whether the projection holds at least `count` events."""
    return bool((await stack.sql("SELECT count(*) FROM events"))[0][0] >= count)


# Every table a rebuild leaves as the projection had it: the derived ones (store.DERIVED_TABLES)
# and the tombstones; every column but the projection's own clock.
TABLES = {
    "events": "SELECT to_jsonb(e) - 'projected_at' FROM events e ORDER BY event_id",
    "sessions": "SELECT * FROM sessions ORDER BY session_id",
    "turns": "SELECT * FROM turns ORDER BY turn_id",
    "messages": "SELECT * FROM messages ORDER BY message_id",
    "tool_calls": "SELECT * FROM tool_calls ORDER BY session_id, tool_use_id",
    "approvals": "SELECT * FROM approvals ORDER BY approval_id",
    "subagents": "SELECT * FROM subagents ORDER BY parent_session_id, tool_use_id, attempt",
    "deleted_sessions": "SELECT * FROM deleted_sessions ORDER BY session_id",
}
# Not derived from the log: a rebuild keeps them as they are (`instances` is the fleet's
# heartbeat and changes on its own; the others are the ledger, inputs and bookkeeping).
KEPT_TABLES = {
    "effects": "SELECT * FROM effects ORDER BY effect_key",
    "tool_outputs": "SELECT * FROM tool_outputs ORDER BY session_id, tool_use_id",
    "api_tokens": "SELECT * FROM api_tokens ORDER BY token_sha256",
    "analyst_logins": "SELECT * FROM analyst_logins ORDER BY role_name",
    "schema_migrations": "SELECT * FROM schema_migrations ORDER BY version",
}
UNCOMPARED_TABLES = frozenset({"instances", "consumer_offsets", "dead_letters"})


async def snapshot(stack: Stack, tables: dict[str, str] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived row (or those of `tables`), in a stable order."""
    return {name: await stack.sql(query) for name, query in tables.items()}


@contextlib.asynccontextmanager
async def stack_on(server_uri: str, log_dir: Path, **overrides: Any) -> AsyncIterator[Stack]:
    """A fresh broker and database; every started part is stopped afterwards."""
    broker = Broker(log_dir)
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        database_url=create_database(server_uri),
        partitions=overrides.pop("partitions", 4),
        workspace_root=overrides.pop("workspace_root", workspaces(log_dir)),
        auth_required=overrides.pop("auth_required", False),
        **overrides,
    )
    await store.migrate(settings.database_url)
    stack = Stack(settings, broker)
    try:
        yield stack
    finally:
        await stack.stop_all()
        broker.stop()


def published_cost(model: str, usage: Usage) -> Decimal:
    """A call's cost by genai-prices' own calculator, apart from agentlog's pricing code: the
    model's published prices times the usage (genai-prices counts cached tokens as input)."""
    total_input = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    return genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=total_input,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
        ),
        model_ref=model,
        provider_id="anthropic",
    ).total_price
