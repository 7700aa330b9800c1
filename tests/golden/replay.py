"""Read a golden log back: its records as they were appended, decoded as a reader decodes them
(markers passed over, old versions upcast), folded per session into a summary of what a
session is: its status, turns, messages as the model is sent them, usage and cost."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from eventstore import codec, store
from eventstore.events import Event
from eventstore.records import Records
from eventstore.settings import Settings
from eventstore.state import SessionState, fold
from processors.groups import Record


def load(path: Path) -> list[dict[str, Any]]:
    """The records of a golden log, in the order they were read (partition, then offset)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def headers(record: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in record["headers"]]


def events(records: list[dict[str, Any]]) -> list[Event]:
    """Every event of the records (the log's identity marker is not one), decoded."""
    return [codec.decode(r["value"].encode(), headers(r)) for r in records if not codec.is_marker(headers(r))]


def by_session(evs: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for event in evs:
        out[event.session_id].append(event)
    return dict(out)


def summary(state: SessionState) -> dict[str, Any]:
    """What a session is, in terms that outlive the state's internal layout."""
    return {
        "tenant_id": state.tenant_id,
        "status": state.status,
        "model": state.config.model,
        "parent_session_id": state.parent_session_id,
        "forked_from": state.forked_from,
        "turns": [[t.turn_id, t.status] for t in state.turns],
        "turn_count": state.turn_count,
        "messages": [m.as_api() for m in state.messages],
        "usage": state.usage.model_dump(mode="json"),
        "cost_usd": None if state.cost_usd is None else str(state.cost_usd),
        "summary": state.summary,
        "compacted_through": state.compacted_through,
        "event_count": state.event_count,
    }


def summaries(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each session's summary, folded from the records."""
    return {sid: summary(fold(sid, evs)) for sid, evs in sorted(by_session(events(records)).items())}


def raw(records: list[dict[str, Any]]) -> list[Record]:
    """The golden records as the broker hands them to a worker (`groups.Record`)."""
    return [
        Record(
            r["partition"],
            r["offset"],
            r["key"].encode() if r["key"] is not None else None,
            r["value"].encode() if r["value"] is not None else None,
            tuple(headers(r)),
            None,
        )
        for r in records
    ]


# The projection's key rows, in a stable order and without the projection's own clock.
ROWS = {
    "sessions": "SELECT session_id, tenant_id, status, model, turn_count, input_tokens, output_tokens,"
    " cost_usd::text, parent_session_id, context_window FROM sessions ORDER BY session_id",
    "turns": "SELECT session_id, idempotency_key, status, stop_reason, error, steps, cost_usd::text"
    " FROM turns ORDER BY session_id, idempotency_key",
    "messages": "SELECT session_id, seq, role, content, stop_reason FROM messages"
    " ORDER BY session_id, seq, ord",
    "tool_calls": "SELECT session_id, name, input, status, result, is_error FROM tool_calls"
    " ORDER BY session_id, tool_use_id",
    "approvals": "SELECT session_id, name, input, status FROM approvals ORDER BY session_id, approval_id",
    "subagents": "SELECT parent_session_id, child_session_id, attempt, status, result, is_error"
    " FROM subagents ORDER BY parent_session_id, tool_use_id, attempt",
    "deleted_sessions": "SELECT session_id, tenant_id FROM deleted_sessions ORDER BY session_id",
    "events": "SELECT session_id, type, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
}


async def rows(database_url: str) -> dict[str, list[list[Any]]]:
    """The key rows of a projection, JSON-ready."""
    async with await store.connect(database_url) as conn:
        out = {}
        for name, query in ROWS.items():
            cur = await conn.execute(query.encode())
            out[name] = json.loads(json.dumps([list(row) for row in await cur.fetchall()], default=str))
        return out


async def project(database_url: str, records: list[dict[str, Any]], epoch: str = "golden") -> None:
    """Project the records into a migrated database as the projector does, partition by partition."""
    from processors.projector import to_incoming

    parts: dict[int, list[Record]] = defaultdict(list)
    for record in raw(records):
        parts[record.partition].append(record)
    # The golden records are in clear: a reader without a master key decodes them.
    reader = Records(Settings(database_url=database_url))
    try:
        async with await store.connect(database_url) as conn:
            for partition, mine in sorted(parts.items()):
                batch = [await to_incoming(reader, r) for r in mine]
                result = await store.apply_batch(
                    conn, "projector", epoch, codec.EVENTS_TOPIC, partition, batch
                )
                assert not result.dead, result.dead
    finally:
        await reader.close()
