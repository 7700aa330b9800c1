"""What a sub-agent takes from its parent, in both sub-agent models (the queue's worker and
`POST /v1/subagent/run`): at most the parent's tools, and the parent's approvals, budget and
limits. One definition, so that neither model can start a child freer than its parent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.rows import dict_row

from eventstore import untrusted
from eventstore.config import SessionConfig
from eventstore.state import SessionState, fold
from eventstore.store import AsyncConn, event_from_row

# The parent's rules a child starts with, as SubagentRequested's `limits` records them:
# settings of its config, and `untrusted` of its state (what came into the parent so far).
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
_SETTINGS = {name for name in INHERITED if name in SessionConfig.model_fields}  # all but untrusted


def child_tools(parent: SessionState, asked: object) -> list[str] | None:
    """The tools a child may use: those the model asked for (a list of names; anything else
    asks for all), never one its parent lacks. None allows every tool, as for the parent."""
    tools = [str(t) for t in asked] if isinstance(asked, list) else None
    allowed = parent.config.tools
    if allowed is None:
        return tools
    return [t for t in (tools if tools is not None else allowed) if t in allowed]


def inherited(parent: SessionState) -> dict[str, Any]:
    """The parent's rules and limits, as a SubagentRequested's `limits` records them (JSON)."""
    rules = {**parent.config.model_dump(mode="json", include=_SETTINGS), "untrusted": parent.untrusted}
    return {name: rules[name] for name in INHERITED}


def child_start(limits: Mapping[str, Any], fallback: SessionConfig, **own: Any) -> dict[str, Any]:
    """What a child's session_started takes from its parent: its config (`fallback`, the
    deployment's defaults, with the parent's recorded rules over it and the child's `own`
    settings: model, system, metadata, tools) and whether it starts untrusted. A rule a
    `limits` recorded by an older version lacks is the fallback's; one no longer inherited
    is left out."""
    rules = {k: v for k, v in limits.items() if k in _SETTINGS}
    return {
        "config": SessionConfig().updated({**fallback.model_dump(include=_SETTINGS), **rules, **own}),
        "untrusted": bool(limits.get("untrusted", False)),
    }


async def parent_rules(conn: AsyncConn, session_id: str, tenant: str) -> SessionState | None:
    """The rules of the tenant's session `session_id`, folded from its projected
    session_started events (nothing else sets them), and whether untrusted content came into
    it since; None if the tenant has no such session."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM events WHERE session_id = %s AND type = 'session_started' ORDER BY seq",
            (session_id,),
        )
        rows = await cur.fetchall()
    state = fold(session_id, [event_from_row(row) for row in rows]) if rows else None
    if state is None or state.status == "new" or state.tenant_id != tenant:
        return None
    if not state.untrusted:
        # What came in since its start, as the fold marks it: a result of a tool that brings
        # strangers' content (the queue model's worker reads this off the folded state).
        cur = await conn.execute(
            "SELECT DISTINCT name FROM tool_calls WHERE session_id = %s AND result IS NOT NULL", (session_id,)
        )
        if any(untrusted.is_untrusted(name) for (name,) in await cur.fetchall()):
            state = state.replace({"untrusted": True})
    return state
