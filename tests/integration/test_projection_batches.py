"""A batch writes the same rows as its records applied one at a time, bad ones included.

The batch mixes tool turns of several sessions with a duplicate, an undecodable record, an
event Postgres cannot store, a deletion and an event after it; whatever path a batch takes
(pipelined, or again event by event after a bad record), rows, offsets and dead letters agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bench.synthetic import tool_session
from eventstore import codec, ids, store
from eventstore import events as ev
from eventstore.models import OFFLINE_MODEL
from eventstore.state import fold
from tests.services import TABLES, create_database

pytestmark = pytest.mark.services

EPOCH = "epoch-1"


def _incoming(offset: int, event: ev.Event) -> store.Incoming:
    key, value, headers = codec.encode(event)
    return store.Incoming(offset, key, value, headers, codec.decode(value, headers))


def _records(with_unstorable: bool) -> list[store.Incoming]:
    a, b = tool_session("a", 2), tool_session("b", 1)
    deleted = ev.SessionDeleted(
        event_id=ids.derive(ids.event_key("b", "session_deleted")),
        session_id="b",
        occurred_at=ev.now(),
    )
    unstorable = ev.session_started("c", model=OFFLINE_MODEL, metadata={"x": "a\u0000b"})
    stream: list[ev.Event | bytes] = [*a[:8], b"\x00 not an event", *b, a[3], *a[8:], deleted]
    stream += [ev.user_message("b", text="after the deletion", idempotency_key="late")]
    if with_unstorable:
        stream.insert(5, unstorable)
    stream.append(ev.session_started("d", model=OFFLINE_MODEL))
    out = []
    for offset, item in enumerate(stream):
        if isinstance(item, bytes):
            out.append(store.Incoming(offset, b"x", item, [], None, "not JSON"))
        else:
            out.append(_incoming(offset, item))
    return out


async def _rows(conn: store.AsyncConn) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived row, the offsets and the dead letters, in a stable order."""
    queries = {
        **TABLES,
        "offsets": "SELECT consumer, log_epoch, topic, log_partition, next_offset FROM consumer_offsets",
        "dead_letters": "SELECT log_offset, record_value, reason FROM dead_letters ORDER BY log_offset",
    }
    rows = {}
    for name, query in queries.items():
        cur = await conn.execute(query.encode())
        rows[name] = await cur.fetchall()
    return rows


async def _project(
    server: str, records: Sequence[store.Incoming], size: int, nested: bool = False
) -> tuple[dict[str, list[tuple[Any, ...]]], tuple[int, int, int]]:
    """Rows after applying `records` in batches of `size`, and (applied, duplicates, dead)."""
    url = create_database(server)
    await store.migrate(url)
    counts = [0, 0, 0]
    async with await store.connect(url) as conn:
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            if nested:  # as `agentlog rebuild` calls it: inside a transaction of its own
                async with conn.transaction():
                    result = await store.apply_batch(conn, "projector", EPOCH, "t", 0, batch)
            else:
                result = await store.apply_batch(conn, "projector", EPOCH, "t", 0, batch)
            counts[0] += result.applied
            counts[1] += result.duplicates
            counts[2] += result.dead_letters
        rows = await _rows(conn)
    return rows, (counts[0], counts[1], counts[2])


@pytest.mark.parametrize("with_unstorable", [False, True], ids=["pipelined", "falls-back"])
async def test_a_batch_writes_what_its_records_write_one_by_one(
    pg_server: str, with_unstorable: bool
) -> None:
    records = _records(with_unstorable)
    one_by_one, counts = await _project(pg_server, records, 1)
    assert counts == (len(records) - 3 - with_unstorable, 2, 1 + with_unstorable)
    assert one_by_one["offsets"] == [("projector", EPOCH, "t", 0, len(records))]
    assert len(one_by_one["deleted_sessions"]) == 1 and one_by_one["sessions"]
    assert {r[0] for r in one_by_one["sessions"]} == {"a", "d"}  # b deleted, c unstorable
    for size, nested in ((len(records), False), (7, False), (len(records), True)):
        assert await _project(pg_server, records, size, nested) == (one_by_one, counts)


@pytest.mark.parametrize("cache", ["none", "stale"])
async def test_a_batch_applied_again_changes_nothing(pg_server: str, cache: str) -> None:
    records = _records(with_unstorable=False)
    url = create_database(pg_server)
    await store.migrate(url)
    states: store.States | None = None
    async with await store.connect(url) as conn:
        first = await store.apply_batch(conn, "projector", EPOCH, "t", 0, records)
        before = await _rows(conn)
        if cache == "stale":
            # The folded states a replica that lost the partition early was left with: behind
            # Postgres, so they are loaded again rather than projected from.
            states = {sid: fold(sid, [r.event for r in records[:2] if r.event]) for sid in ("a", "d")}
        # Redelivered below the stored offset: skipped; copies at new offsets: duplicates.
        again = await store.apply_batch(conn, "projector", EPOCH, "t", 0, records, states=states)
        copies = [
            store.Incoming(len(records) + r.offset, r.key, r.value, r.headers, r.event) for r in records
        ]
        later = await store.apply_batch(conn, "projector", EPOCH, "t", 0, copies, states=states)
        after = await _rows(conn)
    assert first.applied > 0 and again.skipped == len(records) and again.applied == 0
    assert later.applied == 0 and later.duplicates == len(records) - 1 and later.dead_letters == 1
    assert after["offsets"] == [("projector", EPOCH, "t", 0, 2 * len(records))]
    assert {k: v for k, v in after.items() if k not in ("offsets", "dead_letters")} == {
        k: v for k, v in before.items() if k not in ("offsets", "dead_letters")
    }
