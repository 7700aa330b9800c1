"""Real services for tests, the project's and its users': an embedded Postgres server, a
Tansu broker per stack, the workers and the api as tasks of the test's event loop.

A broker starts in milliseconds, so each stack gets a fresh one (a fresh log epoch) and a
fresh database on the shared Postgres server.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from agentlog import devstack
from api.app import create_app
from eventstore import roles, store
from eventstore.settings import Settings
from processors.run import ROLES, Role, run_role
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
    api_app: Any = None  # the api's FastAPI app, once started (its state: pool, log…)

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
        # The api logs in as its own role, as `agentlog up` runs it: row-level security binds it.
        api = self.settings.model_copy(update={"database_url": roles.as_role(self.settings.database_url)})
        self.api_app = create_app(api)
        config = uvicorn.Config(self.api_app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
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

    async def start_everything(self, tools: Registry | None = None) -> str:
        """Every worker role and the api (each role loads the settings' tools unless given
        `tools`); returns the api's URL."""
        await self.start(*ROLES, tools=tools)
        return await self.start_api()

    async def turn(self, session_id: str, content: str, wait: float = 30, **session: Any) -> dict[str, Any]:
        """Post a user turn (`session` settings apply to a new session: agent, model, tools…)
        and wait for it to finish; returns the turn as GET …/turns/{id} shows it."""
        async with httpx.AsyncClient(base_url=self.api_url or "", timeout=wait + 30) as client:
            r = await client.post(
                f"/v1/sessions/{session_id}/messages",
                params={"wait": wait} if wait else None,
                json={"content": content, **session},
            )
        if r.status_code not in (200, 202):
            raise AssertionError(f"posting the turn answered {r.status_code}: {r.text}")
        return dict(r.json())

    async def tool_calls(self, session_id: str) -> list[tuple[str, str, bool]]:
        """The session's tool calls as SQL has them: (name, result text, is_error), in order."""
        rows = await self.sql(
            "SELECT name, result #>> '{}', is_error FROM tool_calls WHERE session_id = %s"
            " ORDER BY requested_at, name",
            session_id,
        )
        return [(name, result, is_error) for name, result, is_error in rows]

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
