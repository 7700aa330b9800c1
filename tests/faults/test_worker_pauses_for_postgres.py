"""Issue 17: a running worker that loses Postgres pauses in place instead of exiting (and being
restarted, and exiting again): it says so, /readyz answers 503, nothing is consumed meanwhile,
and once Postgres is back the same process resumes from its stored offsets — a turn appended
to the log during the outage completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentlog import devstack
from agentlog.supervise import EmbeddedPostgres, pid_alive
from eventstore import events as ev
from eventstore import store
from eventstore.log import KafkaLog
from eventstore.models import OFFLINE_MODEL
from eventstore.settings import Settings
from eventstore.vault import Vault, new_master_key
from tests.faults.test_kill import _stop, _worker
from tests.services import Broker, create_database, wait_until

ROLES = ("projector", "reactor", "model")


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test's own (the session's is shared): it is killed and restarted."""
    server, _ = devstack.start_postgres(tmp_path)
    postgres = EmbeddedPostgres(server)
    try:
        yield postgres
    finally:
        pid = postgres.pid()
        if pid is not None:  # an immediate shutdown: its data goes with tmp_path
            os.kill(pid, signal.SIGQUIT)
        server.cleanup()


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


async def _said(path: Path, text: str) -> bool:
    return text in await asyncio.to_thread(path.read_text, errors="replace")


async def test_workers_pause_while_postgres_is_away_and_resume_in_place(
    postgres: EmbeddedPostgres, log_dir: Path, tmp_path: Path
) -> None:
    url = create_database(postgres.server.get_uri())
    await store.migrate(url)
    broker = Broker(log_dir)
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=url, partitions=2)
    port = devstack.free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {role: tmp_path / f"{role}-{os.getpid()}.log" for role in ROLES}  # as _worker names them

    async def sql(query: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await store.connect(url) as conn:
            cur = await conn.execute(query, params or None)
            return await cur.fetchall()

    async def completed(count: int) -> bool:
        return bool((await sql("SELECT count(*) FROM turns WHERE status = 'completed'"))[0][0] == count)

    kafka = KafkaLog(settings)
    await kafka.start()
    try:
        for role in ROLES:
            extra = {"AGENTLOG_METRICS_PORT": str(port)} if role == "model" else {}
            procs[role] = _worker(role, settings, tmp_path, "", extra)
        at = datetime.now(UTC)
        await kafka.append(ev.session_started("p", model=OFFLINE_MODEL, at=at))
        await kafka.append(ev.user_message("p", text="before", idempotency_key="t1", at=at))
        await wait_until(lambda: completed(1), within=60)
        pids = {role: proc.pid for role, proc in procs.items()}

        postmaster = postgres.pid()
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        await wait_until(lambda: asyncio.to_thread(lambda: not pid_alive(postmaster)), within=10)
        # A turn during the outage: every worker meets the dead database on its records.
        await kafka.append(ev.user_message("p", text="during", idempotency_key="t2", at=datetime.now(UTC)))
        for role in ROLES:
            await wait_until(lambda role=role: _said(logs[role], "paused until it answers again"), within=30)
        assert await asyncio.to_thread(_ready, port) == 503
        assert all(proc.poll() is None for proc in procs.values())

        assert await asyncio.to_thread(postgres.watch)  # restarted in place: its data is on disk
        await wait_until(lambda: completed(2), within=60)
        for role in ROLES:
            assert await _said(logs[role], "resuming from the stored offsets"), role
        assert {role: proc.pid for role, proc in procs.items() if proc.poll() is None} == pids
        await wait_until(lambda: asyncio.to_thread(lambda: _ready(port) == 200), within=10)
        per_step = await sql(
            "SELECT count(*) FILTER (WHERE type = 'model_requested'),"
            " count(*) FILTER (WHERE type = 'assistant_message') FROM events"
        )
        assert per_step == [(2, 2)]
    finally:
        await kafka.stop()
        for proc in procs.values():
            _stop(proc)
        broker.stop()


async def test_the_vaults_pooled_connections_outlive_a_restarted_postgres(postgres: EmbeddedPostgres) -> None:
    """The key store's pool lives as long as the worker's log client, across its pauses: a
    connection to the dead server must not be handed out once Postgres is back (a resumed
    worker failed on it at once, left its group and rejoined: bench.chaos, pg)."""
    url = create_database(postgres.server.get_uri())
    await store.migrate(url)
    vault = Vault(Settings(database_url=url, master_key=new_master_key()))
    try:
        made = await vault.for_append("v", "default")
        assert not isinstance(made, str)
        postmaster = postgres.pid()
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        await wait_until(lambda: asyncio.to_thread(lambda: not pid_alive(postmaster)), within=10)
        assert await asyncio.to_thread(postgres.watch)
        vault.forget("v")  # looked up again, through the pool
        assert (await vault.for_reading("v")).encrypt(b"n" * 12, b"x", None) == made.encrypt(
            b"n" * 12, b"x", None
        )
    finally:
        await vault.close()
