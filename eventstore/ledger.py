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

from eventstore import codec, pipelined
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


# What every ledger write checks, inside its statement: the session was not deleted and (with
# a fence) the writer's claim on the session's partition is still the latest.
_GUARD = (
    "NOT EXISTS (SELECT 1 FROM deleted_sessions WHERE session_id = %(session_id)s)"
    " AND (NOT %(fenced)s OR EXISTS (SELECT 1 FROM partition_owners WHERE consumer = %(f_consumer)s"
    " AND log_epoch = %(f_epoch)s AND log_partition = %(f_partition)s AND generation = %(f_generation)s))"
)


async def _guarded(
    conn: AsyncConn, session_id: str, fence: Fence | None, statement: str, params: dict[str, Any]
) -> tuple[bool, bool]:
    """Run `statement` (its WHERE holds `_GUARD`) in a transaction that holds the session's
    lock, the fence's claim share-locked, all sent as one pipeline with BEGIN and COMMIT
    (eventstore/pipelined.py): one round trip where five statements each waited for the
    last (and psycopg's own pipelined transaction took four). Returns (written, session deleted); raises
    `Fenced` unless the writer still owns the session's partition.

    The lock is taken by a statement of its own before the write: each statement of a
    transaction sees what was committed when it began, so the write sees a deletion
    committed while it waited for the lock (serialised with store._delete_session).
    """
    guard = {"session_id": session_id, "fenced": fence is not None}
    if fence is not None:
        guard.update(fence.claim_params(session_id))
    else:
        guard.update(f_consumer="", f_epoch="", f_partition=0, f_generation=0)
    async with pipelined.transaction(conn):
        owner = await fence.lock_claim(conn, session_id) if fence is not None else None
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SESSION_LOCK, session_id))
        gone = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM deleted_sessions WHERE session_id = %s)", (session_id,)
        )
        cur = await conn.execute(statement, {**params, **guard})
    if fence is not None:
        assert owner is not None
        fence.raise_unless_mine(session_id, await owner.fetchone())
    deleted = await gone.fetchone()
    written = cur.rowcount > 0
    return written, bool(deleted and deleted[0])


def _insert(columns: str, values: str, conflict: str) -> str:
    """An effects insert guarded by `_GUARD`, returning a row when it wrote."""
    return (
        f"INSERT INTO effects ({columns}) SELECT {values} WHERE {_GUARD}"
        f" ON CONFLICT (effect_key) {conflict} RETURNING 1"
    )


_START = _insert(
    "effect_key, session_id, tenant_id, kind, request_event_id, status, intent",
    "%(key)s, %(session_id)s, %(tenant_id)s, %(kind)s, %(event_id)s, 'started', %(intent)s",
    "DO NOTHING",
)


async def start(
    conn: AsyncConn, key: str, kind: str, request: Event, intent: dict[str, Any], fence: Fence | None = None
) -> Entry | None:
    """Record that an effect is about to run, with what it intends; returns the entry that
    was already there (its effect may have run: the caller must not simply run again), or
    None when this call started it. Raises SessionGone if the session was deleted."""
    params = _row(key, kind, request, intent=Jsonb(intent))
    written, deleted = await _guarded(conn, request.session_id, fence, _START, params)
    if deleted:
        raise SessionGone(request.session_id)
    return None if written else await entry(conn, key)


def _row(key: str, kind: str, request: Event, **more: Any) -> dict[str, Any]:
    return {
        "key": key,
        "tenant_id": request.tenant_id,
        "kind": kind,
        "event_id": request.event_id,
        **more,
    }


class SessionGone(Exception):
    """The session was deleted: its ledger rows must not come back."""


_RECORD = _insert(
    "effect_key, session_id, tenant_id, kind, request_event_id, outcome, attempts",
    "%(key)s, %(session_id)s, %(tenant_id)s, %(kind)s, %(event_id)s, %(outcome)s, %(attempts)s",
    "DO UPDATE SET outcome = EXCLUDED.outcome, status = 'done', attempts = EXCLUDED.attempts,"
    " recorded_at = now() WHERE effects.status = 'started'",
)


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
    params = _row(key, kind, request, outcome=Jsonb(body), attempts=attempts)
    written, deleted = await _guarded(conn, request.session_id, fence, _RECORD, params)
    if deleted:
        return None
    if written:
        return outcome
    winner = await recorded(conn, key)
    assert winner is not None, f"ledger row {key} vanished"
    return winner


_STORE_OUTPUT = (
    "INSERT INTO tool_outputs (sha256, session_id, tenant_id, tool_use_id, content, chars)"
    " SELECT %(digest)s, %(session_id)s, %(tenant_id)s, %(tool_use_id)s, %(content)s, %(chars)s"
    f" WHERE {_GUARD}"
    " ON CONFLICT (session_id, tool_use_id) DO UPDATE SET sha256 = EXCLUDED.sha256,"
    " content = EXCLUDED.content, chars = EXCLUDED.chars, stored_at = now()"
)


async def store_output(
    conn: AsyncConn, request: Event, whole: str, digest: str, fence: Fence | None = None
) -> None:
    """Keep a tool result too large for an event (the latest run's), unless the session is gone."""
    params = {
        "digest": digest,
        "tenant_id": request.tenant_id,
        "tool_use_id": getattr(request.payload, "tool_use_id", ""),
        "content": whole,
        "chars": len(whole),
    }
    await _guarded(conn, request.session_id, fence, _STORE_OUTPUT, params)


_LEASE = _insert(
    "effect_key, session_id, tenant_id, kind, request_event_id, status, intent, lease_until",
    "%(key)s, %(session_id)s, %(tenant_id)s, %(kind)s, %(event_id)s, 'started', %(intent)s,"
    " now() + make_interval(secs => %(seconds)s)",
    "DO UPDATE SET intent = EXCLUDED.intent, lease_until = EXCLUDED.lease_until"
    " WHERE effects.status = 'started' AND effects.lease_until IS NOT NULL"
    " AND (effects.lease_until < now() OR effects.intent->>'owner' = EXCLUDED.intent->>'owner')",
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
    params = _row(key, kind, request, intent=Jsonb({"owner": owner}), seconds=seconds)
    written, deleted = await _guarded(conn, request.session_id, fence, _LEASE, params)
    if deleted:
        raise SessionGone(request.session_id)
    return None if written else await entry(conn, key)


async def renew(conn: AsyncConn, key: str, owner: str, seconds: float) -> bool:
    """Extend `owner`'s lease on `key`; False if it no longer holds it (it ran out and another
    replica took it, or the outcome is recorded)."""
    cur = await conn.execute(
        "UPDATE effects SET lease_until = now() + make_interval(secs => %s) WHERE effect_key = %s"
        " AND status = 'started' AND intent->>'owner' = %s AND lease_until >= now() RETURNING 1",
        (seconds, key, owner),
    )
    return await cur.fetchone() is not None
