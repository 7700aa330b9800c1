"""Golden logs (tests/golden/): records appended by an earlier version, replayed by this one.
Every record decodes (old versions upcast), every session folds to the summary stored when it
was recorded, and projected into a fresh database the records give the rows the live
projection had then (invariants 1 and 4 across versions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventstore import codec, store
from eventstore.events import EVENT_TYPES, SCHEMA_VERSION, SessionExpired
from tests.golden import replay
from tests.services import create_database

GOLDEN = Path(__file__).parent.parent / "golden"
LOGS = sorted(p.stem for p in GOLDEN.glob("*.jsonl"))


def _expected(name: str) -> dict[str, Any]:
    return dict(json.loads((GOLDEN / f"{name}.expected.json").read_text()))


@pytest.mark.parametrize("name", LOGS)
def test_a_golden_log_folds_to_the_states_it_was_recorded_with(name: str) -> None:
    records = replay.load(GOLDEN / f"{name}.jsonl")
    assert replay.summaries(records) == _expected(name)["states"]


def test_the_golden_logs_hold_every_event_type() -> None:
    """A new event type needs a golden log that holds it (`python -m tests.golden.record`)."""
    seen = {e.type for name in LOGS for e in replay.events(replay.load(GOLDEN / f"{name}.jsonl"))}
    assert seen == set(EVENT_TYPES)


def test_a_version_1_expiry_is_upcast_to_version_2() -> None:
    """Version 2 of `session_expired` states its TTL (`ttl_s`); a version 1 record, which did
    not, reads as version 2 with the TTL unknown, and this version writes version 2."""
    (record,) = [
        r
        for r in replay.load(GOLDEN / "v1.jsonl")
        if dict(r["headers"]).get("event-type") == "session_expired"
    ]
    assert dict(record["headers"])["schema-version"] == "1" and "ttl_s" not in record["value"]
    event = codec.decode(record["value"].encode(), replay.headers(record))
    assert isinstance(event, SessionExpired) and event.schema_version == SCHEMA_VERSION == 2
    assert event.payload.ttl_s is None and event.payload.idle_s >= 1
    # Stored in Postgres as version 1 (schema_version and payload columns): upcast alike.
    assert codec.from_dict(json.loads(record["value"])) == event
    _, value, headers = codec.encode(event)
    assert dict(headers)["schema-version"] == b"2" and codec.decode(value, headers) == event


@pytest.mark.parametrize("name", LOGS)
async def test_a_golden_log_projects_to_the_rows_it_was_recorded_with(name: str, pg_server: str) -> None:
    database_url = create_database(pg_server)
    await store.migrate(database_url)
    await replay.project(database_url, replay.load(GOLDEN / f"{name}.jsonl"))
    assert await replay.rows(database_url) == _expected(name)["rows"]
