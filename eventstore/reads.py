"""Reads of the projection for the api and the CLI: sessions, turns, event pages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row

from eventstore.ledger import tool_key
from eventstore.store import AsyncConn


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _tokens(row: dict[str, Any]) -> dict[str, int]:
    """A row's token columns as the api shows them."""
    return {
        "input": row["input_tokens"],
        "output": row["output_tokens"],
        "cache_read": row["cache_read_tokens"],
        "cache_write": row["cache_write_tokens"],
    }


def _money(value: Decimal | None) -> str | None:
    """A cost as a decimal string; None when unknown (a call could not be priced)."""
    if value is None:
        return None
    return "0" if value == 0 else format(value.normalize(), "f")


async def session_view(conn: AsyncConn, session_id: str) -> dict[str, Any] | None:
    """`{id, messages, metadata: {...}}` of a session, or None if unknown."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM sessions WHERE session_id = %s", (session_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "SELECT role, content, turn_id FROM messages WHERE session_id = %s ORDER BY seq, ord",
            (session_id,),
        )
        messages = [
            {"role": m["role"], "content": m["content"], "turn_id": m["turn_id"]}
            for m in await cur.fetchall()
        ]
    return {
        "id": row["session_id"],
        "messages": messages,
        "metadata": {
            "model": row["model"],
            "status": row["status"],
            "turn_count": row["turn_count"],
            "total_tokens": _tokens(row),
            "session_cost": _money(row["cost_usd"]),
            "started_at": _iso(row["started_at"]),
            "last_activity_at": _iso(row["last_activity_at"]),
            "tenant_id": row["tenant_id"],
            "user_metadata": row["metadata"],
            "parent_session_id": row["parent_session_id"],
            "forked_from": row["forked_from"],
        },
    }


async def session_deleted(conn: AsyncConn, session_id: str, tenant: str | None = None) -> bool:
    """Whether the session was deleted (its rows are gone; a tombstone remains)."""
    cur = await conn.execute(
        "SELECT 1 FROM deleted_sessions WHERE session_id = %s AND (%s::text IS NULL OR tenant_id = %s)",
        (session_id, tenant, tenant),
    )
    return await cur.fetchone() is not None


async def sessions_page(
    conn: AsyncConn,
    tenant: str,
    status: str | None,
    started_after: Any,
    started_before: Any,
    after: str | None,
    limit: int,
    model: str | None = None,
) -> dict[str, Any]:
    """A tenant's sessions in id order after `after`: `{data, has_more, first_id, last_id}`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT session_id, status, model, turn_count, cost_usd, started_at, last_activity_at,"
            " parent_session_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"
            " FROM sessions WHERE tenant_id = %(tenant)s"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(model)s::text IS NULL OR model = %(model)s)"
            " AND (%(a)s::timestamptz IS NULL OR started_at >= %(a)s)"
            " AND (%(b)s::timestamptz IS NULL OR started_at < %(b)s)"
            " AND (%(after)s::text IS NULL OR session_id > %(after)s)"
            " ORDER BY session_id LIMIT %(limit)s",
            {
                "tenant": tenant,
                "status": status,
                "model": model,
                "a": started_after,
                "b": started_before,
                "after": after,
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    data = [
        {
            "id": r["session_id"],
            "status": r["status"],
            "model": r["model"],
            "turn_count": r["turn_count"],
            "cost_usd": _money(r["cost_usd"]),
            "started_at": _iso(r["started_at"]),
            "last_activity_at": _iso(r["last_activity_at"]),
            "parent_session_id": r["parent_session_id"],
            "total_tokens": _tokens(r),
        }
        for r in rows[:limit]
    ]
    return {
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


async def session_taken(conn: AsyncConn, session_id: str) -> bool:
    """Whether a new session may not have this stored id: a session has or had it, in any
    tenant (migration 0015's session_tenant, which sees across tenants)."""
    cur = await conn.execute("SELECT session_tenant(%s) IS NOT NULL", (session_id,))
    row = await cur.fetchone()
    return bool(row is not None and row[0])


async def session_exists(conn: AsyncConn, session_id: str) -> bool:
    """Whether the projection knows the session."""
    cur = await conn.execute("SELECT 1 FROM sessions WHERE session_id = %s", (session_id,))
    return await cur.fetchone() is not None


# A turn with the messages that answered it (not the user's), in one query.
TURN_VIEW = (
    "SELECT t.*, (SELECT coalesce(jsonb_agg(jsonb_build_object('role', m.role, 'content', m.content)"
    " ORDER BY m.seq, m.ord), '[]') FROM (SELECT role, content, seq, ord FROM messages"
    " WHERE session_id = %(sid)s AND turn_id = %(tid)s ORDER BY seq, ord OFFSET 1) m) AS _replies"
    " FROM turns t WHERE t.session_id = %(sid)s AND t.turn_id = %(tid)s"
)


async def turn_view(conn: AsyncConn, session_id: str, turn_id: str) -> dict[str, Any] | None:
    """A turn with its status, usage, cost and the assistant's messages."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(TURN_VIEW, {"sid": session_id, "tid": turn_id})
        row = await cur.fetchone()
    return None if row is None else turn_view_of(row)


def turn_view_of(row: dict[str, Any]) -> dict[str, Any]:
    """The view of a row of `TURN_VIEW`."""
    replies: list[dict[str, Any]] = row["_replies"]
    answers = [r for r in replies if r["role"] == "assistant"]
    last = answers[-1]["content"] if answers else []
    text = "\n".join(b.get("text", "") for b in last if b.get("type") == "text")
    return {
        "turn_id": row["turn_id"],
        "session_id": row["session_id"],
        "status": row["status"],
        "stop_reason": row["stop_reason"],
        "error": row["error"],
        "steps": row["steps"],
        "user_content": row["user_content"],
        "output_text": text,
        "messages": replies,
        "usage": _tokens(row),
        "cost": _money(row["cost_usd"]),
        "requested_at": _iso(row["requested_at"]),
        "completed_at": _iso(row["completed_at"]),
    }


async def events_page(conn: AsyncConn, session_id: str, after: int, limit: int) -> dict[str, Any]:
    """Events of a session after a sequence number: `{data, has_more, first_id, last_id}`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT seq, event_id, type, turn_id, step, causation_id, correlation_id, occurred_at,"
            " schema_version, tenant_id, payload FROM events WHERE session_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (session_id, after, limit + 1),
        )
        rows = await cur.fetchall()
    has_more = len(rows) > limit
    data = [
        {
            **r,
            "event_id": str(r["event_id"]),
            "causation_id": str(r["causation_id"]) if r["causation_id"] else None,
            "occurred_at": _iso(r["occurred_at"]),
            "session_id": session_id,
        }
        for r in rows[:limit]
    ]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["seq"] if data else None,
        "last_id": data[-1]["seq"] if data else None,
    }


_APPROVAL_COLUMNS = (
    "approval_id, session_id, tenant_id, turn_id, step, tool_use_id, name, input, status, reason,"
    " requested_at, decided_at"
)


def _approval_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "requested_at": _iso(row["requested_at"]), "decided_at": _iso(row["decided_at"])}


async def approvals(conn: AsyncConn, session_id: str, status: str | None) -> list[dict[str, Any]]:
    """A session's approvals, oldest first, optionally of one status."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE session_id = %s"
            " AND (%s::text IS NULL OR status = %s) ORDER BY requested_at, approval_id",
            (session_id, status, status),
        )
        return [_approval_view(r) for r in await cur.fetchall()]


async def approval(conn: AsyncConn, session_id: str, approval_id: str) -> dict[str, Any] | None:
    """One approval of a session, or None."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE session_id = %s AND approval_id = %s",
            (session_id, approval_id),
        )
        row = await cur.fetchone()
    return _approval_view(row) if row is not None else None


async def tenant_approvals(
    conn: AsyncConn, tenant: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """A tenant's approvals across its sessions, oldest first (the console's inbox)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = %s"
            " AND (%s::text IS NULL OR status = %s) ORDER BY requested_at, approval_id LIMIT %s",
            (tenant, status, status, limit),
        )
        return [_approval_view(r) for r in await cur.fetchall()]


async def turns(conn: AsyncConn, session_id: str) -> list[dict[str, Any]]:
    """A session's turns in the order they were asked: status, usage, cost, times, latency."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM turns WHERE session_id = %s ORDER BY requested_at, turn_id", (session_id,)
        )
        rows = await cur.fetchall()
    return [
        {
            "turn_id": r["turn_id"],
            "status": r["status"],
            "stop_reason": r["stop_reason"],
            "error": r["error"],
            "steps": r["steps"],
            "interrupted": r["interrupted"],
            "usage": _tokens(r),
            "cost": _money(r["cost_usd"]),
            "requested_at": _iso(r["requested_at"]),
            "started_at": _iso(r["started_at"]),
            "completed_at": _iso(r["completed_at"]),
            "duration_ms": _millis(r["started_at"] or r["requested_at"], r["completed_at"]),
        }
        for r in rows
    ]


def _millis(start: datetime | None, end: datetime | None) -> int | None:
    return round((end - start).total_seconds() * 1000) if start is not None and end is not None else None


def _idempotency_class(intent: dict[str, Any] | None, recorded: bool, subagent: bool) -> str | None:
    """How the call may be repeated, as the ledger shows it: a write or guarded write records
    its intent before it runs; a read or fetch records only its result (the two are alike
    after a crash: the recorded result is reused); a sub-agent is its own session."""
    if subagent:
        return "agent"
    if not recorded:
        return None  # not run (yet): waiting, denied, or answered without running
    if intent is None:
        return "read_or_fetch"
    if "class" in intent:
        return str(intent["class"])
    return "guarded_write" if "pre_sha256" in intent else "write"


async def tool_calls(conn: AsyncConn, session_id: str) -> list[dict[str, Any]]:
    """Every tool call the model made in the session, in order: its input, result, duration,
    whether it waits for a human, the idempotency class the ledger recorded for its run, and
    the child sessions of a Task call. The calls come from the transcript (a call answered
    without an executor, such as a denied one or a sub-agent, has no executor row)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT role, content, turn_id, created_at FROM messages WHERE session_id = %s ORDER BY seq, ord",
            (session_id,),
        )
        messages = await cur.fetchall()
        await cur.execute(
            "SELECT tool_use_id, step, status, result, is_error, requested_at, completed_at, duration_ms"
            " FROM tool_calls WHERE session_id = %s",
            (session_id,),
        )
        executed = {r["tool_use_id"]: r for r in await cur.fetchall()}
        await cur.execute(
            "SELECT tool_use_id, approval_id, status FROM approvals WHERE session_id = %s", (session_id,)
        )
        approvals = {r.pop("tool_use_id"): r for r in await cur.fetchall()}
        await cur.execute(
            "SELECT tool_use_id, attempt, child_session_id, status, duration_ms FROM subagents"
            " WHERE parent_session_id = %s ORDER BY tool_use_id, attempt",
            (session_id,),
        )
        children: dict[str, list[dict[str, Any]]] = {}
        for r in await cur.fetchall():
            children.setdefault(r.pop("tool_use_id"), []).append(r)
        await cur.execute(
            "SELECT effect_key, intent FROM effects WHERE session_id = %s AND kind = 'tool'", (session_id,)
        )
        ledger = {r["effect_key"]: r["intent"] for r in await cur.fetchall()}
    results = {
        b.get("tool_use_id"): b
        for m in messages
        if m["role"] == "user"
        for b in m["content"]
        if b.get("type") == "tool_result"
    }
    out = []
    for m in messages:
        if m["role"] != "assistant":
            continue
        for block in m["content"]:
            if block.get("type") != "tool_use":
                continue
            call_id = str(block.get("id"))
            out.append(
                _tool_call(
                    session_id,
                    block,
                    m,
                    executed.get(call_id),
                    results.get(call_id),
                    approvals.get(call_id),
                    children.get(call_id, []),
                    ledger,
                )
            )
    return out


def _tool_call(
    session_id: str,
    block: dict[str, Any],
    message: dict[str, Any],
    executed: dict[str, Any] | None,
    answer: dict[str, Any] | None,
    approval: dict[str, Any] | None,
    subagents: list[dict[str, Any]],
    ledger: dict[str, Any],
) -> dict[str, Any]:
    """One tool_use block with what the rows know of it."""
    call_id = str(block.get("id"))
    step = executed["step"] if executed is not None else None
    key = tool_key(session_id, message["turn_id"], step, call_id)
    if answer is not None:
        status = "error" if answer.get("is_error") else "ok"
    elif approval is not None and approval["status"] == "pending":
        status = "waiting_for_approval"
    else:
        status = executed["status"] if executed is not None else "requested"
    duration = executed["duration_ms"] if executed is not None else None
    if duration is None and subagents:
        duration = subagents[-1]["duration_ms"]
    return {
        "tool_use_id": call_id,
        "turn_id": message["turn_id"],
        "name": block.get("name"),
        "input": block.get("input", {}),
        "status": status,
        # What the model got; until the next model call, what the executor recorded.
        "result": answer.get("content") if answer is not None else (executed or {}).get("result"),
        "is_error": answer.get("is_error", False) if answer is not None else (executed or {}).get("is_error"),
        "requested_at": _iso(executed["requested_at"] if executed is not None else message["created_at"]),
        "completed_at": _iso(executed["completed_at"]) if executed is not None else None,
        "duration_ms": duration,
        "idempotency_class": _idempotency_class(ledger.get(key), key in ledger, bool(subagents)),
        "approval": approval,
        "subagents": [{k: v for k, v in s.items() if k != "duration_ms"} for s in subagents],
    }


async def timer_candidates(
    conn: AsyncConn, at: datetime, tool_deadline_s: float, model_deadline_s: float | None = None
) -> list[str]:
    """Sessions a timer may be due for at `at`, from the projection (not from a walk over
    cached states): idle past their TTL, a tool call unanswered past the deadline, a
    sub-agent running (its timeout is the parent's, checked on the folded state), or running
    with nothing happening past the model's deadline."""
    cur = await conn.execute(
        "SELECT session_id FROM sessions WHERE status = 'idle' AND ttl_s IS NOT NULL"
        " AND last_activity_at <= %(at)s - make_interval(secs => ttl_s)"
        " UNION SELECT session_id FROM tool_calls WHERE status = 'requested'"
        " AND requested_at <= %(at)s - make_interval(secs => %(deadline)s)"
        " UNION SELECT parent_session_id FROM subagents WHERE status = 'running'"
        " UNION SELECT session_id FROM sessions WHERE status = 'running' AND %(model)s::float8 IS NOT NULL"
        " AND last_activity_at <= %(at)s - make_interval(secs => %(model)s::float8)",
        {"at": at, "deadline": tool_deadline_s, "model": model_deadline_s},
    )
    return [row[0] for row in await cur.fetchall()]
