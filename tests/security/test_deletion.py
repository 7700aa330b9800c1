"""Deletion that deletes (issue 16, invariant 12): with a master key every session's records
are sealed in the log with a data key of its own; deleting the session destroys the key and
the workspace, so its records can never be read again, replay and fork answer that it is
gone, and the workers go on with every other session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from typer.testing import CliRunner

from agentlog import replay
from agentlog.cli import app
from eventstore import codec, vault
from eventstore import events as ev
from eventstore.errors import MasterKeyError, Shredded
from eventstore.log import KafkaLog, partition_for, read_partition
from eventstore.settings import Settings
from processors.run import run_role
from processors.tools.workspace import workspace_path
from tests.services import Stack, stack_on, wait_until

MARKER = "plaintext-marker-5b0e1d"


@pytest.fixture
async def sealed(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, master_key=vault.new_master_key()) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


async def records_of(settings: Settings, session_id: str) -> list[ConsumerRecord[bytes, bytes]]:
    """The session's records as the topic holds them (read raw, no codec)."""
    partition = partition_for(session_id, settings.partitions)
    return [r async for r in read_partition(settings, partition) if r.key == session_id.encode()]


def write(path: str, content: str) -> str:
    return "call Write " + json.dumps({"file_path": path, "content": content})


async def test_a_deleted_sessions_records_key_and_workspace_are_gone(sealed: Stack) -> None:
    done = await sealed.turn("doomed", f"{MARKER}\n{write('secret.txt', MARKER)}")
    assert done["status"] == "completed", done
    await sealed.turn("keeper", f"{MARKER} stays readable")
    workspace = workspace_path(sealed.settings.workspace_root, "default", "doomed")
    assert (workspace / "secret.txt").read_text() == MARKER

    raw = await records_of(sealed.settings, "doomed")
    assert {codec.content_type(r.headers) for r in raw} == {codec.SEALED_TYPE}
    assert not [r.offset for r in raw if MARKER.encode() in (r.value or b"") + repr(r.headers).encode()]
    # The same bytes open with the session's key (Postgres has them in clear, as projected).
    reader = KafkaLog(sealed.settings)
    try:
        opened = [await reader.records.decode(r.key, r.value, r.headers) for r in raw]
    finally:
        await reader.stop()
    assert "user_message" in {e.type for e in opened}
    assert MARKER in json.dumps([e.model_dump(mode="json") for e in opened])

    async with httpx.AsyncClient(base_url=sealed.api_url or "") as client:
        assert (await client.delete("/v1/sessions/doomed")).status_code == 202

        async def gone() -> bool:
            keys = await sealed.sql("SELECT wrapped_key FROM session_keys WHERE session_id = 'doomed'")
            deleted = await sealed.sql("SELECT 1 FROM deleted_sessions WHERE session_id = 'doomed'")
            return keys == [(None,)] and bool(deleted) and not workspace.exists()

        await wait_until(gone)
        fork = await client.post("/v1/sessions/doomed/fork", json={})
        assert fork.status_code == 410 and fork.headers["content-type"] == "application/problem+json"
        assert "was deleted" in fork.json()["detail"]
        assert (await client.get("/v1/sessions/doomed")).status_code == 404

    # The same records no longer open, in a process that never saw them (no cached key).
    after = await records_of(sealed.settings, "doomed")
    reader = KafkaLog(sealed.settings)
    try:
        for record in after:
            if codec.content_type(record.headers) == codec.SEALED_TYPE:
                with pytest.raises(Shredded):
                    await reader.records.decode(record.key, record.value, record.headers)
        last = await reader.records.decode(after[-1].key, after[-1].value, after[-1].headers)
        assert last.type == "session_deleted"  # in clear: every reader must see it
    finally:
        await reader.stop()
    assert [e.type for e in await replay.events_from_kafka(sealed.settings, "doomed")] == ["session_deleted"]

    # Rebuilding the projection reads every record again: the deleted session's are passed
    # over, not dead-lettered, and the others are all there.
    result = await replay.rebuild(sealed.settings)
    assert result["dead_letters"] == 0
    assert await sealed.sql("SELECT count(*) FROM events WHERE session_id = 'doomed'") == [(0,)]
    # The workers go on: another session's turn completes, nothing was dead-lettered.
    again = await sealed.turn("keeper", write("more.txt", "still here"))
    assert again["status"] == "completed", again
    assert await sealed.sql("SELECT consumer, reason FROM dead_letters") == []
    assert await sealed.sql("SELECT count(*) FROM payload_blobs WHERE session_id = 'doomed'") == [(0,)]


async def test_a_wrong_master_key_is_a_clear_error_at_start(pg_server: str, log_dir: Path) -> None:
    async with stack_on(pg_server, log_dir, master_key=vault.new_master_key()) as sealed:
        await _wrong_key_refused_then_rotated(sealed)


async def _wrong_key_refused_then_rotated(sealed: Stack) -> None:
    writer = KafkaLog(sealed.settings)
    try:
        await writer.start()
        await writer.append(ev.user_message("keyed", text="hello", idempotency_key="k"))
    finally:
        await writer.stop()
    other = sealed.settings.model_copy(
        update={"master_key": Settings(master_key=vault.new_master_key()).master_key}
    )
    log = KafkaLog(other)
    try:
        with pytest.raises(MasterKeyError, match="AGENTLOG_MASTER_KEY") as caught:
            await log.start()
    finally:
        await log.stop()
    assert sealed.settings.master_key is not None
    assert sealed.settings.master_key.get_secret_value() not in str(caught.value)
    # Rotation: the new key, the old one as a previous one, every data key wrapped again.
    env = {
        "AGENTLOG_DATABASE_URL": sealed.settings.database_url,
        "AGENTLOG_MASTER_KEY": other.master_key.get_secret_value() if other.master_key else "",
        "AGENTLOG_PREVIOUS_MASTER_KEYS": sealed.settings.master_key.get_secret_value(),
    }
    done = await asyncio.to_thread(CliRunner().invoke, app, ["keys", "rotate"], env=env)
    assert done.exit_code == 0 and "data key(s) wrapped" in done.output, done.output
    # Without a master key a worker refuses to start over sealed records (each would be a
    # dead letter), and says why.
    keyless = sealed.settings.model_copy(update={"master_key": None})
    with pytest.raises(MasterKeyError, match="no AGENTLOG_MASTER_KEY is set"):
        await run_role("projector", keyless, asyncio.Event())
    rotated: dict[str, Any] = {"master_key": other.master_key, "previous_master_keys": []}
    log = KafkaLog(sealed.settings.model_copy(update=rotated))
    try:
        await log.start()  # only the new key is needed now
        raw = await records_of(sealed.settings, "keyed")
        assert (await log.records.decode(raw[0].key, raw[0].value, raw[0].headers)).session_id == "keyed"
    finally:
        await log.stop()


async def test_workers_that_reach_a_deleted_sessions_records_late_pass_over_them(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, master_key=vault.new_master_key()) as stack:
        await stack.start("projector")
        await stack.start_api()
        async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
            posted = await client.post("/v1/sessions/late/messages", json={"content": MARKER})
            assert posted.status_code == 202, posted.text

            async def projected() -> bool:
                return bool(await stack.sql("SELECT 1 FROM events WHERE session_id = 'late'"))

            await wait_until(projected)
            assert (await client.delete("/v1/sessions/late")).status_code == 202

        async def tombstone() -> bool:
            return bool(await stack.sql("SELECT 1 FROM deleted_sessions WHERE session_id = 'late'"))

        await wait_until(tombstone)
        # The workers start now and read the partition from its beginning: the deleted
        # session's user message (its turn never run) can no longer be opened.
        await stack.start("reactor", "model", "tools")
        done = await stack.turn("alive", "hello")
        assert done["status"] == "completed", done
        reactor = stack.workers["reactor"]
        assert reactor.metrics.shredded.labels("reactor")._value.get() >= 1
        assert await stack.sql("SELECT consumer, reason FROM dead_letters") == []
        assert await stack.sql("SELECT count(*) FROM events WHERE session_id = 'late'") == [(0,)]
        assert await stack.sql("SELECT count(*) FROM effects WHERE session_id = 'late'") == [(0,)]
