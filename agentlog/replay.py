"""Replay and rebuild: a session's state from the log or from Postgres; the projection from the log.

Neither ever calls a model or runs a tool: they read recorded events only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from psycopg.rows import dict_row

from eventstore import admission, codec, store
from eventstore import log as kafka_log
from eventstore.errors import DecodeError
from eventstore.events import Event
from eventstore.records import Records
from eventstore.settings import Settings
from eventstore.state import SessionState, fold
from processors.projector import to_incoming

Source = Literal["kafka", "postgres"]


async def events_from_kafka(settings: Settings, session_id: str) -> list[Event]:
    """The session's events in the current log, in log order (undecodable records skipped)."""
    partition = kafka_log.partition_for(session_id, await kafka_log.partition_count(settings))
    key = codec.key_for(session_id)
    found: list[Event] = []
    reader = Records(settings)
    try:
        await reader.vault.check()  # a sealed log without its key would read as empty
        async for record in kafka_log.read_partition(settings, partition):
            if record.key != key or codec.is_marker(record.headers):
                continue
            try:
                found.append(await reader.decode(record.key, record.value, record.headers))
            except DecodeError:
                continue
    finally:
        await reader.close()
    return found


async def events_from_postgres(settings: Settings, session_id: str) -> list[Event]:
    """The session's projected events in session order, every log epoch included."""
    async with await store.connect(settings.database_url) as conn:
        return await store.session_events(conn, session_id)


async def replay(settings: Settings, session_id: str, source: Source) -> SessionState:
    """Fold a session from one source."""
    if source == "kafka":
        # What its consumers take of the log: refused events are dead letters, not the session's.
        found = admission.admitted(session_id, await events_from_kafka(settings, session_id))
    else:
        found = await events_from_postgres(settings, session_id)
    return fold(session_id, found)


async def rebuild(settings: Settings, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Drop the derived tables and rebuild them: older log epochs from `events`, then the log.

    The embedded broker forgets its log on restart, so the rows of older epochs are the only
    copy of those events; they are kept and re-projected first, in session order.
    """
    reader = Records(settings)
    try:
        # Before anything is dropped: a sealed log without its key would rebuild as empty.
        await reader.vault.check()
        return await _rebuild(settings, reader, progress)
    finally:
        await reader.close()


async def _rebuild(
    settings: Settings, reader: Records, progress: Callable[[int, int], None] | None
) -> dict[str, Any]:
    """The body of `rebuild`, with the reader that opens sealed records."""
    epoch = await kafka_log.log_epoch(settings)
    records: dict[int, list[Any]] = {}
    for partition in range(await kafka_log.partition_count(settings)):
        records[partition] = [r async for r in kafka_log.read_partition(settings, partition)]
    total_log = sum(len(v) for v in records.values())
    async with await store.connect(settings.database_url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (store.PROJECTION_LOCK,))
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    "SELECT * FROM events WHERE log_epoch <> %s ORDER BY session_id, seq", (epoch,)
                )
                older = await cur.fetchall()
            await store.drop_derived(conn)
            total = len(older) + total_log
            done = 0
            states: store.States = {}
            for row in older:
                event = store.event_from_row(row)
                await store.project_event(
                    conn, event, row["log_epoch"], row["log_partition"], row["log_offset"], states
                )
                done += 1
                if progress and done % 100 == 0:
                    progress(done, total)
            result = {
                "older_epoch_events": len(older),
                "log_records": total_log,
                "applied": 0,
                "duplicates": 0,
                "dead_letters": 0,
            }
            for partition, recs in records.items():
                for start in range(0, len(recs), 500):
                    chunk = recs[start : start + 500]
                    await reader.prefetch(chunk)
                    batch = await store.apply_batch(
                        conn,
                        "projector",
                        epoch,
                        codec.EVENTS_TOPIC,
                        partition,
                        [await to_incoming(reader, r) for r in chunk],
                        states=states,
                    )
                    result["applied"] += batch.applied
                    result["duplicates"] += batch.duplicates
                    result["dead_letters"] += batch.dead_letters
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    return result
