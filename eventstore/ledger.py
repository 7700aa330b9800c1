"""The effect ledger: one recorded outcome per effect key, so no recorded effect runs twice.

An effect worker looks its key up before doing anything; after doing it, it records the
outcome with `INSERT ... ON CONFLICT DO NOTHING` and appends whichever outcome won, so
two workers racing on one request still append one outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from eventstore import codec
from eventstore.events import Event
from eventstore.owners import Fence
from eventstore.store import SESSION_LOCK, AsyncConn


def model_key(session_id: str, turn_id: str | None, step: int | None) -> str:
    """The ledger key of a model call: session/turn/step."""
    return f"model/{session_id}/{turn_id}/{step}"


def compaction_key(session_id: str, turn_id: str | None, step: int | None) -> str:
    """The ledger key of the compaction before a model call: session/turn/step."""
    return f"compaction/{session_id}/{turn_id}/{step}"


def tool_key(session_id: str, turn_id: str | None, step: int | None, tool_use_id: str) -> str:
    """The ledger key of a tool run: session/turn/step/tool_use_id."""
    return f"tool/{session_id}/{turn_id}/{step}/{tool_use_id}"


@dataclass(frozen=True)
class Entry:
    """A ledger row: `started` (intent recorded, no outcome yet) or `done` (outcome recorded)."""

    status: str
    intent: dict[str, Any] | None
    outcome: Event | None


async def entry(conn: AsyncConn, key: str) -> Entry | None:
    """The ledger's row for `key`, if any."""
    cur = await conn.execute("SELECT status, intent, outcome FROM effects WHERE effect_key = %s", (key,))
    row = await cur.fetchone()
    if row is None:
        return None
    return Entry(row[0], row[1], codec.from_dict(row[2]) if row[2] is not None else None)


async def recorded(conn: AsyncConn, key: str) -> Event | None:
    """The outcome recorded under `key`, if any."""
    found = await entry(conn, key)
    return found.outcome if found is not None else None


async def _session_lock(conn: AsyncConn, session_id: str, fence: Fence | None = None) -> bool:
    """Take the session's lock (held to the end of the transaction); False if it was deleted.
    With a fence, raises `Fenced` unless the writer still owns the session's partition."""
    if fence is not None:
        await fence.check_session(conn, session_id)
    # Serialised with the projector's deletion of the session (store._delete_session).
    await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, session_id))
    cur = await conn.execute("SELECT 1 FROM deleted_sessions WHERE session_id = %s", (session_id,))
    return await cur.fetchone() is None


async def start(
    conn: AsyncConn, key: str, kind: str, request: Event, intent: dict[str, Any], fence: Fence | None = None
) -> Entry | None:
    """Record that an effect is about to run, with what it intends; returns the entry that
    was already there (its effect may have run: the caller must not simply run again), or
    None when this call started it. Raises SessionGone if the session was deleted."""
    async with conn.transaction():
        if not await _session_lock(conn, request.session_id, fence):
            raise SessionGone(request.session_id)
        cur = await conn.execute(
            "INSERT INTO effects (effect_key, session_id, tenant_id, kind, request_event_id, status, intent)"
            " VALUES (%s, %s, %s, %s, %s, 'started', %s) ON CONFLICT (effect_key) DO NOTHING RETURNING 1",
            (key, request.session_id, request.tenant_id, kind, request.event_id, Jsonb(intent)),
        )
        if await cur.fetchone() is not None:
            return None
        return await entry(conn, key)


class SessionGone(Exception):
    """The session was deleted: its ledger rows must not come back."""


async def record(
    conn: AsyncConn,
    key: str,
    kind: str,
    request: Event,
    outcome: Event,
    attempts: int = 1,
    fence: Fence | None = None,
) -> Event | None:
    """Record an outcome unless one is already recorded; returns the recorded one, or None
    if the session was deleted meanwhile (its ledger rows must not come back).

    Runs its own transaction: `conn` must not be shared with concurrent tasks.
    """
    body = json.loads(codec.encode(outcome)[1])
    async with conn.transaction():
        if not await _session_lock(conn, request.session_id, fence):
            return None
        cur = await conn.execute(
            "INSERT INTO effects (effect_key, session_id, tenant_id, kind, request_event_id, outcome,"
            " attempts) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (effect_key) DO UPDATE SET outcome = EXCLUDED.outcome, status = 'done',"
            " attempts = EXCLUDED.attempts, recorded_at = now() WHERE effects.status = 'started'"
            " RETURNING 1",
            (key, request.session_id, request.tenant_id, kind, request.event_id, Jsonb(body), attempts),
        )
        if await cur.fetchone() is not None:
            return outcome
        winner = await recorded(conn, key)
    assert winner is not None, f"ledger row {key} vanished"
    return winner


async def store_output(
    conn: AsyncConn, request: Event, whole: str, digest: str, fence: Fence | None = None
) -> None:
    """Keep a tool result too large for an event (the latest run's), unless the session is gone."""
    tool_use_id = getattr(request.payload, "tool_use_id", "")
    async with conn.transaction():
        if not await _session_lock(conn, request.session_id, fence):
            return
        await conn.execute(
            "INSERT INTO tool_outputs (sha256, session_id, tenant_id, tool_use_id, content, chars)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (session_id, tool_use_id) DO UPDATE"
            " SET sha256 = EXCLUDED.sha256, content = EXCLUDED.content, chars = EXCLUDED.chars,"
            " stored_at = now()",
            (digest, request.session_id, request.tenant_id, tool_use_id, whole, len(whole)),
        )


async def lease(
    conn: AsyncConn,
    key: str,
    kind: str,
    request: Event,
    owner: str,
    seconds: float,
    fence: Fence | None = None,
) -> Entry | None:
    """Claim the right to run a re-runnable effect (a model call) for `seconds`. Returns None
    when `owner` holds the lease now (new, run out, or already its own); otherwise the entry
    that stands: done (its outcome), or started under another holder's lease that still runs.
    Raises SessionGone if the session was deleted, `Fenced` if the fence refuses."""
    async with conn.transaction():
        if not await _session_lock(conn, request.session_id, fence):
            raise SessionGone(request.session_id)
        cur = await conn.execute(
            "INSERT INTO effects (effect_key, session_id, tenant_id, kind, request_event_id, status, intent,"
            " lease_until) VALUES (%s, %s, %s, %s, %s, 'started', %s, now() + make_interval(secs => %s))"
            " ON CONFLICT (effect_key) DO UPDATE SET intent = EXCLUDED.intent,"
            " lease_until = EXCLUDED.lease_until WHERE effects.status = 'started'"
            " AND effects.lease_until IS NOT NULL"
            " AND (effects.lease_until < now() OR effects.intent->>'owner' = EXCLUDED.intent->>'owner')"
            " RETURNING 1",
            (
                key,
                request.session_id,
                request.tenant_id,
                kind,
                request.event_id,
                Jsonb({"owner": owner}),
                seconds,
            ),
        )
        if await cur.fetchone() is not None:
            return None
        return await entry(conn, key)


async def renew(conn: AsyncConn, key: str, owner: str, seconds: float) -> bool:
    """Extend `owner`'s lease on `key`; False if it no longer holds it (it ran out and another
    replica took it, or the outcome is recorded)."""
    cur = await conn.execute(
        "UPDATE effects SET lease_until = now() + make_interval(secs => %s) WHERE effect_key = %s"
        " AND status = 'started' AND intent->>'owner' = %s AND lease_until >= now() RETURNING 1",
        (seconds, key, owner),
    )
    return await cur.fetchone() is not None
