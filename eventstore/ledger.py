"""The effect ledger: one recorded outcome per effect key, so no recorded effect runs twice.

An effect worker looks its key up before doing anything; after doing it, it records the
outcome with `INSERT ... ON CONFLICT DO NOTHING` and appends whichever outcome won, so
two workers racing on one request still append one outcome.
"""

from __future__ import annotations

import json

from psycopg.types.json import Jsonb

from eventstore import codec
from eventstore.events import Event
from eventstore.store import SESSION_LOCK, AsyncConn


def model_key(session_id: str, turn_id: str | None, step: int | None) -> str:
    """The ledger key of a model call: session/turn/step."""
    return f"model/{session_id}/{turn_id}/{step}"


def tool_key(session_id: str, turn_id: str | None, step: int | None, tool_use_id: str) -> str:
    """The ledger key of a tool run: session/turn/step/tool_use_id."""
    return f"tool/{session_id}/{turn_id}/{step}/{tool_use_id}"


async def recorded(conn: AsyncConn, key: str) -> Event | None:
    """The outcome recorded under `key`, if any."""
    cur = await conn.execute("SELECT outcome FROM effects WHERE effect_key = %s", (key,))
    row = await cur.fetchone()
    return codec.from_dict(row[0]) if row is not None else None


async def record(
    conn: AsyncConn, key: str, kind: str, request: Event, outcome: Event, attempts: int = 1
) -> Event | None:
    """Record an outcome unless one is already recorded; returns the recorded one, or None
    if the session was deleted meanwhile (its ledger rows must not come back).

    Runs its own transaction: `conn` must not be shared with concurrent tasks.
    """
    body = json.loads(codec.encode(outcome)[1])
    async with conn.transaction():
        # Serialised with the projector's deletion of the session (store.delete_session).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, request.session_id)
        )
        cur = await conn.execute(
            "SELECT 1 FROM deleted_sessions WHERE session_id = %s", (request.session_id,)
        )
        if await cur.fetchone() is not None:
            return None
        cur = await conn.execute(
            "INSERT INTO effects (effect_key, session_id, tenant_id, kind, request_event_id, outcome,"
            " attempts) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (effect_key) DO NOTHING RETURNING 1",
            (key, request.session_id, request.tenant_id, kind, request.event_id, Jsonb(body), attempts),
        )
        if await cur.fetchone() is not None:
            return outcome
        winner = await recorded(conn, key)
    assert winner is not None, f"ledger row {key} vanished"
    return winner
