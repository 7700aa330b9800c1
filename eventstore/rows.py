"""The SQL of the projection's row operations: what one event writes besides its `events` row.

`apply_op` turns one operation of `eventstore.projection` into statements; an answer is read
back only where a later statement depends on it, so a pipelined batch seldom waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from eventstore import ids
from eventstore import projection as pj
from eventstore.events import Event, Usage, add_cost

Conn = psycopg.AsyncConnection[Any]


@dataclass
class SessionDelta:
    """What one event adds to its session's aggregate row."""

    pending: int = 0
    turns: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal | None = Decimal(0)  # None: unknown (an unpriced call)
    expired: bool = False


async def _tool_results_message(conn: Conn, event: Event, seq: int, results: list[Any]) -> None:
    """All tool results of a step, as the one user message the model is sent."""
    if results:
        await conn.execute(
            "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
            " content, created_at) VALUES (%s, %s, %s, %s, %s, 'user', %s, %s)",
            (
                event.event_id,
                event.session_id,
                event.tenant_id,
                event.turn_id,
                seq,
                Jsonb(results),
                event.occurred_at,
            ),
        )


async def apply_op(conn: Conn, event: Event, seq: int, op: pj.Op, d: SessionDelta) -> None:
    """Write one row operation of an event stored at `seq`; what it adds to the session goes to `d`."""
    at = event.occurred_at
    match op:
        case pj.SessionStart():
            # The row was made by the session's first event, with its tenant: another tenant's
            # start changes nothing (as in the fold).
            await conn.execute(
                "UPDATE sessions SET model = %s, system_prompt = %s, metadata = %s,"
                " policy = %s, max_steps = %s, token_budget = %s, ttl_s = %s, parent_session_id = %s,"
                " parent_tool_use_id = %s, depth = %s, forked_from = %s, forked_at_seq = %s, ephemeral = %s,"
                " context_window = %s WHERE session_id = %s AND tenant_id = %s",
                (
                    op.model,
                    op.system,
                    Jsonb(op.metadata),
                    op.policy,
                    op.max_steps,
                    op.token_budget,
                    op.ttl_s,
                    op.parent_session_id,
                    op.parent_tool_use_id,
                    op.depth,
                    op.forked_from,
                    op.forked_at_seq,
                    op.ephemeral,
                    op.context_window,
                    event.session_id,
                    event.tenant_id,
                ),
            )
            for ord_, message in enumerate(op.history):
                await conn.execute(
                    "INSERT INTO messages (message_id, session_id, tenant_id, seq, ord, role, content,"
                    " created_at) SELECT %s, %s, %s, %s, %s, %s, %s, %s"
                    " WHERE EXISTS (SELECT 1 FROM sessions WHERE session_id = %s AND tenant_id = %s)",
                    (
                        ids.derive(ids.event_key(event.session_id, "history", ord_)),
                        event.session_id,
                        event.tenant_id,
                        seq,
                        ord_,
                        message["role"],
                        Jsonb(message["content"]),
                        at,
                        event.session_id,
                        event.tenant_id,
                    ),
                )
        case pj.TurnRequest():
            cur = await conn.execute(
                "INSERT INTO turns (turn_id, session_id, tenant_id, status, idempotency_key,"
                " user_content, requested_at) VALUES (%s, %s, %s, 'queued', %s, %s, %s)"
                " ON CONFLICT (turn_id) DO NOTHING RETURNING 1",
                (op.turn_id, event.session_id, event.tenant_id, op.idempotency_key, Jsonb(op.content), at),
            )
            if await cur.fetchone():
                d.pending += 1
                # As the fold has it: a message of another tenant is refused, and interrupts nothing.
                await conn.execute(
                    "UPDATE turns t SET interrupted = true FROM sessions s"
                    " WHERE s.session_id = t.session_id AND s.policy = 'interrupt' AND s.tenant_id = %s"
                    " AND t.session_id = %s AND t.status = 'running'",
                    (event.tenant_id, event.session_id),
                )
        case pj.TurnStart():
            cur = await conn.execute(
                "UPDATE turns SET status = 'running', started_at = %s"
                " WHERE turn_id = %s AND status = 'queued' RETURNING user_content",
                (at, op.turn_id),
            )
            row = await cur.fetchone()
            if row is not None:
                d.turns += 1
                await conn.execute(
                    "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
                    " content, created_at) VALUES (%s, %s, %s, %s, %s, 'user', %s, %s)",
                    (event.event_id, event.session_id, event.tenant_id, op.turn_id, seq, Jsonb(row[0]), at),
                )
        case pj.ModelStep():
            cur = await conn.execute(
                "UPDATE turns SET steps = GREATEST(steps, %s) WHERE turn_id = %s AND status = 'running'"
                " RETURNING 1",
                (op.step, op.turn_id),
            )
            if await cur.fetchone():
                await _tool_results_message(conn, event, seq, op.tool_results)
        case pj.AssistantReply():
            u = op.usage
            # Only an answer the turn still waits for joins the transcript; a late one is billed.
            await conn.execute(
                "INSERT INTO messages (message_id, session_id, tenant_id, turn_id, seq, role,"
                " content, model, stop_reason, input_tokens, output_tokens, cache_read_tokens,"
                " cache_write_tokens, cost_usd, created_at)"
                " SELECT %s, %s, %s, %s, %s, 'assistant', %s, %s, %s, %s, %s, %s, %s, %s, %s"
                " WHERE EXISTS (SELECT 1 FROM turns WHERE turn_id = %s AND status = 'running'"
                " AND NOT interrupted)",
                (
                    event.event_id,
                    event.session_id,
                    event.tenant_id,
                    op.turn_id,
                    seq,
                    Jsonb(op.content),
                    op.model,
                    op.stop_reason,
                    u.input_tokens,
                    u.output_tokens,
                    u.cache_read_input_tokens,
                    u.cache_creation_input_tokens,
                    op.cost_usd,
                    at,
                    op.turn_id,
                ),
            )
            await _bill(conn, op.turn_id, u, op.cost_usd, d)
        case pj.CompactionMade():
            await _bill(conn, op.turn_id, op.usage, op.cost_usd, d)
        case pj.ToolRequest():
            await conn.execute(
                "INSERT INTO tool_calls (tool_use_id, session_id, tenant_id, turn_id, step, name,"
                " input, status, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, 'requested', %s)"
                " ON CONFLICT (session_id, tool_use_id) DO NOTHING",
                (
                    op.tool_use_id,
                    event.session_id,
                    event.tenant_id,
                    op.turn_id,
                    op.step,
                    op.name,
                    Jsonb(op.input),
                    at,
                ),
            )
        case pj.ToolOutcome() if op.is_error:
            # A Task call answered with an error before its sub-agent finished (timeouts spent).
            await conn.execute(
                "UPDATE subagents SET status = 'timed_out', completed_at = %s WHERE parent_session_id = %s"
                " AND tool_use_id = %s AND status = 'running'",
                (at, event.session_id, op.tool_use_id),
            )
            await _tool_outcome(conn, event, op)
        case pj.ToolOutcome():
            await _tool_outcome(conn, event, op)
        case pj.ApprovalRequest():
            await conn.execute(
                "INSERT INTO approvals (approval_id, session_id, tenant_id, turn_id, step, tool_use_id, name,"
                " input, status, requested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s)"
                " ON CONFLICT (approval_id) DO NOTHING",
                (
                    op.approval_id,
                    event.session_id,
                    event.tenant_id,
                    event.turn_id,
                    event.step,
                    op.tool_use_id,
                    op.name,
                    Jsonb(op.input),
                    at,
                ),
            )
        case pj.ApprovalDecision():
            await conn.execute(
                "UPDATE approvals SET status = %s, reason = %s, decided_at = %s"
                " WHERE approval_id = %s AND status = 'pending'",
                ("approved" if op.approved else "denied", op.reason, at, op.approval_id),
            )
        case pj.SubagentStart(payload=p):
            # A newer attempt abandons the older ones (their late answers are ignored).
            await conn.execute(
                "UPDATE subagents SET status = 'abandoned' WHERE parent_session_id = %s"
                " AND tool_use_id = %s AND attempt < %s AND status = 'running'",
                (event.session_id, p.tool_use_id, p.attempt),
            )
            await conn.execute(
                "INSERT INTO subagents (parent_session_id, tool_use_id, attempt, child_session_id, tenant_id,"
                " turn_id, step, description, prompt, depth, status, requested_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'running', %s) ON CONFLICT DO NOTHING",
                (
                    event.session_id,
                    p.tool_use_id,
                    p.attempt,
                    p.child_session_id,
                    event.tenant_id,
                    event.turn_id,
                    event.step,
                    p.description,
                    p.prompt,
                    p.depth,
                    at,
                ),
            )
        case pj.SubagentEnd(payload=p):
            await conn.execute(
                "UPDATE subagents SET status = %s, result = %s, is_error = %s, completed_at = %s,"
                " duration_ms = %s WHERE parent_session_id = %s AND tool_use_id = %s AND attempt = %s"
                " AND status = 'running'",
                (
                    "failed" if p.is_error else "completed",
                    p.result,
                    p.is_error,
                    at,
                    p.duration_ms,
                    event.session_id,
                    p.tool_use_id,
                    p.attempt,
                ),
            )
        case pj.TurnEnd():
            cur = await conn.execute(
                "UPDATE turns SET status = %s, stop_reason = %s, error = %s, completed_at = %s"
                " WHERE turn_id = %s AND status IN ('queued', 'running') RETURNING 1",
                (op.status, op.stop_reason, op.error, at, op.turn_id),
            )
            if await cur.fetchone():
                d.pending -= 1
                await _tool_results_message(conn, event, seq, op.tool_results)
                # Approvals the turn no longer waits for are closed with it.
                await conn.execute(
                    "UPDATE approvals SET status = 'expired', decided_at = %s"
                    " WHERE turn_id = %s AND status = 'pending'",
                    (at, op.turn_id),
                )
        case pj.SessionExpire():
            d.expired = True
        case pj.SessionDelete():
            pass  # handled before any row is written


async def _bill(conn: Conn, turn_id: str | None, u: Usage, cost: Decimal | None, d: SessionDelta) -> None:
    """A model call's usage and cost, added to its turn and (through `d`) to its session."""
    await conn.execute(
        "UPDATE turns SET input_tokens = input_tokens + %s,"
        " output_tokens = output_tokens + %s, cache_read_tokens = cache_read_tokens + %s,"
        " cache_write_tokens = cache_write_tokens + %s, cost_usd = cost_usd + %s"
        " WHERE turn_id = %s",
        (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
            cost,
            turn_id,
        ),
    )
    d.usage = d.usage + u
    d.cost = add_cost(d.cost, cost)


async def _tool_outcome(conn: Conn, event: Event, op: pj.ToolOutcome) -> None:
    await conn.execute(
        "UPDATE tool_calls SET status = CASE WHEN %s THEN 'error' ELSE 'ok' END,"
        " result = %s, is_error = %s, completed_at = %s, duration_ms = %s"
        " WHERE session_id = %s AND tool_use_id = %s AND completed_at IS NULL",
        (
            op.is_error,
            Jsonb(op.content),
            op.is_error,
            event.occurred_at,
            op.duration_ms,
            event.session_id,
            op.tool_use_id,
        ),
    )
