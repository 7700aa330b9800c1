"""Postgres NOTIFY channels: their names and payloads, for the side that sends and the side
that listens. `agentlog_projected` says which sessions' rows a projector transaction wrote
(delivered at its commit), `agentlog_turns` which turns it finished; `agentlog_deltas`
carries a model call's streamed text."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import psycopg

PROJECTED = "agentlog_projected"
DELTAS = "agentlog_deltas"
# Turns a projector transaction finished, `{turn_id: session_id}`: what a `?wait` waits for.
TURNS = "agentlog_turns"
# Postgres refuses payloads of 8000 bytes or more; a chunk of session ids stays well under.
MAX_PAYLOAD = 7000
# An entry of `{ "id" : seq, ... }` beyond its id: the separators and a bigint.
_ENTRY_OVERHEAD = 6 + 20
# What a listener reads as "anything may have changed": every session is looked at again.
EVERYTHING = "*"


def chunks(session_ids: Collection[str]) -> tuple[list[list[str]], bool]:
    """The ids split so that each chunk's payload stays under MAX_PAYLOAD, and whether some id
    is too long for any payload (then only EVERYTHING can announce it)."""
    out: list[list[str]] = []
    size = MAX_PAYLOAD
    too_long = False
    for sid in sorted(session_ids):
        # json.dumps escapes to ASCII: never shorter than what Postgres writes for the id.
        entry = len(json.dumps(sid)) + _ENTRY_OVERHEAD
        if entry > MAX_PAYLOAD - 4:
            too_long = True
            continue
        if size + entry > MAX_PAYLOAD - 4:
            out.append([])
            size = 0
        out[-1].append(sid)
        size += entry
    return out, too_long


async def notify_projected(conn: psycopg.AsyncConnection[Any], session_ids: Collection[str]) -> None:
    """Inside the projector's transaction: announce each session's new last seq. Postgres
    delivers it at commit, when the rows are visible, and never if the transaction rolls back."""
    groups, too_long = chunks(session_ids)
    for group in groups:
        await conn.execute(
            "SELECT pg_notify(%s, json_object_agg(session_id, last_seq)::text) FROM sessions"
            " WHERE session_id = ANY(%s) HAVING count(*) > 0",
            (PROJECTED, group),
        )
    if too_long:
        await conn.execute("SELECT pg_notify(%s, %s)", (PROJECTED, EVERYTHING))


def parse_projected(payload: str) -> dict[str, int] | None:
    """Session id -> its last projected seq; None when anything may have changed (EVERYTHING,
    or a payload this version cannot read)."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    try:
        return {str(sid): int(seq) for sid, seq in value.items()}
    except (TypeError, ValueError):
        return None


async def notify_turns(conn: psycopg.AsyncConnection[Any], finished: Mapping[str, str]) -> None:
    """Inside the projector's transaction: announce the turns it finished (turn id -> session
    id), in payloads under MAX_PAYLOAD; delivered at commit, with the rows."""
    chunk: dict[str, str] = {}
    size = 2
    for turn_id, session_id in finished.items():
        entry = len(json.dumps(turn_id)) + len(json.dumps(session_id)) + 2
        if chunk and size + entry > MAX_PAYLOAD:
            await conn.execute("SELECT pg_notify(%s, %s)", (TURNS, json.dumps(chunk)))
            chunk, size = {}, 2
        chunk[turn_id] = session_id
        size += entry
    if chunk:
        await conn.execute("SELECT pg_notify(%s, %s)", (TURNS, json.dumps(chunk)))


def parse_turns(payload: str) -> dict[str, str] | None:
    """Turn id -> session id of finished turns; None for a payload this version cannot read."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return {str(k): v for k, v in value.items()}


def delta_payloads(head: dict[str, Any], text: str) -> Iterator[str]:
    """A model call's streamed `text` as `agentlog_deltas` payloads (`head` plus a piece of the
    text), each under MAX_PAYLOAD bytes however the text encodes (UTF-8: up to 4 bytes a
    character, 6 for an escaped control; 4,000 CJK characters escaped to ASCII were 24 KB)."""
    start = 0
    while start < len(text):
        size = min(len(text) - start, MAX_PAYLOAD // 4)
        while True:
            payload = json.dumps({**head, "text": text[start : start + size]}, ensure_ascii=False)
            if len(payload.encode()) < MAX_PAYLOAD or size == 1:
                break
            size //= 2
        yield payload
        start += size


async def notify_delta(conn: psycopg.AsyncConnection[Any], payload: str) -> None:
    """Send one payload of `delta_payloads` (on its own: a live view is best effort)."""
    await conn.execute("SELECT pg_notify(%s, %s)", (DELTAS, payload))
