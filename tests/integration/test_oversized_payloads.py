"""Payloads larger than a log record (issue 17): a user message and a tool result over the
broker's record limit are kept in Postgres by their sha256 (sealed with the session's key)
and the log holds a reference; every reader rebuilds the same bytes, nothing crashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agentlog import replay
from eventstore import codec, vault
from eventstore import events as ev
from eventstore.errors import DecodeError
from eventstore.log import KafkaLog, partition_for, read_partition
from tests.services import Stack, stack_on, wait_until

RECORD_LIMIT = 16 * 1024
MARKER = "oversized-marker-91ac"


@pytest.fixture
async def small_records(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server,
        log_dir,
        kafka_max_request_size=RECORD_LIMIT,
        tool_result_max_chars=200_000,
        master_key=vault.new_master_key(),
    ) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


def text_of(events: list[ev.Event], kind: type[ev.Event]) -> str:
    return json.dumps([e.payload.model_dump(mode="json") for e in events if isinstance(e, kind)])


async def test_a_user_message_and_a_tool_result_over_the_record_limit_go_by_reference(
    small_records: Stack,
) -> None:
    big_file = "".join(f"{MARKER} line {i:05d} {'x' * 60}\n" for i in range(600))  # ~50 KB
    write = "call Write " + json.dumps({"file_path": "big.txt", "content": big_file})
    done = await small_records.turn("big", write)
    assert done["status"] == "completed", done
    read = await small_records.turn("big", "call Read " + json.dumps({"file_path": "big.txt"}))
    assert read["status"] == "completed", read
    settings = small_records.settings
    partition = partition_for("big", settings.partitions)
    raw = [r async for r in read_partition(settings, partition) if r.key == b"big"]
    references = [r for r in raw if codec.content_type(r.headers) == codec.REFERENCE_TYPE]
    kinds = {dict(r.headers)["event-type"] for r in references}
    assert {b"user_message", b"tool_result"} <= kinds, kinds
    assert all(len(r.value or b"") < 200 for r in references)
    assert not [r.offset for r in raw if MARKER.encode() in (r.value or b"")]

    # Kept by their sha256, sealed like the rest.
    for record in references:
        digest, size = codec.referenced(record.value)
        rows = await small_records.sql(
            "SELECT body, size, content_type FROM payload_blobs WHERE sha256 = %s", digest
        )
        assert len(rows) == 1
        body, stored, ctype = rows[0]
        assert hashlib.sha256(bytes(body)).hexdigest() == digest and stored == size == len(bytes(body))
        assert ctype.encode() == codec.SEALED_TYPE and MARKER.encode() not in bytes(body)

    # Replay from the log rebuilds the same bytes the projection holds.
    logged = await replay.events_from_kafka(settings, "big")
    projected = await replay.events_from_postgres(settings, "big")
    assert [e.event_id for e in logged] == [e.event_id for e in projected]
    assert logged == projected
    first = next(e for e in logged if isinstance(e, ev.UserMessage))
    assert first.payload.content == [{"type": "text", "text": write}]
    assert f"{MARKER} line 00599" in text_of(logged, ev.ToolResult)
    assert await small_records.sql("SELECT count(*) FROM dead_letters") == [(0,)]

    # A kept payload that no longer matches its digest is refused, never trusted.
    digest, _ = codec.referenced(references[0].value)
    await small_records.sql(
        "UPDATE payload_blobs SET body = body || '\\x00'::bytea WHERE sha256 = %s", digest
    )
    reader = KafkaLog(settings)
    try:
        with pytest.raises(DecodeError, match="sha256"):
            await reader.records.decode(references[0].key, references[0].value, references[0].headers)
    finally:
        await reader.stop()

    # Deleting the session removes what it kept.
    async with httpx.AsyncClient(base_url=small_records.api_url or "") as client:
        assert (await client.delete("/v1/sessions/big")).status_code == 202

    async def emptied() -> bool:
        return await small_records.sql("SELECT count(*) FROM payload_blobs") == [(0,)]

    await wait_until(emptied)
