"""What a sub-agent takes from its parent, in both sub-agent models (the queue's worker and
`POST /v1/subagent/run`): at most the parent's tools, and the parent's approvals, budget and
limits. One definition, so that neither model can start a child freer than its parent."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from eventstore.state import SessionState, fold
from eventstore.store import AsyncConn, event_from_row

# The parent's rules a child starts with (SessionStartedPayload fields, SessionState
# attributes of the same names).
INHERITED = (
    "approvals",
    "approve_after_untrusted",
    "webfetch_allow",
    "untrusted",
    "token_budget",
    "max_subagents",
    "subagent_mode",
    "subagent_timeout_s",
    "subagent_attempts",
    "max_depth",
    "max_steps",
    "max_tokens",
    "context_window",
)


def child_tools(parent: SessionState, asked: object) -> list[str] | None:
    """The tools a child may use: those the model asked for (a list of names; anything else
    asks for all), never one its parent lacks. None allows every tool, as for the parent."""
    tools = [str(t) for t in asked] if isinstance(asked, list) else None
    if parent.tools is None:
        return tools
    return [t for t in (tools if tools is not None else parent.tools) if t in parent.tools]


def inherited(parent: SessionState) -> dict[str, Any]:
    """The parent's rules and limits, as the child's session_started takes them."""
    rules = {name: getattr(parent, name) for name in INHERITED}
    rules["approvals"] = list(parent.approvals)
    rules["approve_after_untrusted"] = list(parent.approve_after_untrusted)
    rules["webfetch_allow"] = list(parent.webfetch_allow) if parent.webfetch_allow is not None else None
    return rules


def only_inherited(limits: dict[str, Any]) -> dict[str, Any]:
    """The entries of a recorded `limits` a child takes (older events may hold others)."""
    return {k: v for k, v in limits.items() if k in INHERITED}


async def parent_rules(conn: AsyncConn, session_id: str, tenant: str) -> SessionState | None:
    """The rules of the tenant's session `session_id`, folded from its projected
    session_started events (nothing else sets them), or None if the tenant has no such session."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM events WHERE session_id = %s AND type = 'session_started' ORDER BY seq",
            (session_id,),
        )
        rows = await cur.fetchall()
    state = fold(session_id, [event_from_row(row) for row in rows]) if rows else None
    if state is None or state.status == "new" or state.tenant_id != tenant:
        return None
    return state
