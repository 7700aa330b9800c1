"""Forks: the history a new session starts from, read from another session's recorded events.

Only recorded events are read (invariant 8: no model call, no tool run). The history is cut
back to the last moment no turn was running at or before the chosen event, so the fork's
transcript is valid for the Messages API (no tool_use left without its result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from eventstore import context
from eventstore.config import SessionConfig
from eventstore.mcp import McpTool
from eventstore.state import empty, evolve
from eventstore.store import AsyncConn, event_from_row


@dataclass(frozen=True)
class Source:
    """What a fork takes from its source: messages, config, and where it was cut."""

    messages: list[dict[str, Any]]
    config: SessionConfig  # the source's, the agent it started from included
    at_seq: int
    mcp_tools: list[McpTool] | None = None  # the MCP tools the source was offered


async def history(conn: AsyncConn, session_id: str, at_seq: int | None) -> Source:
    """The source session's messages and config as of event `at_seq` (default: its last)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM events WHERE session_id = %s AND (%s::bigint IS NULL OR seq <= %s) ORDER BY seq",
            (session_id, at_seq, at_seq),
        )
        rows = await cur.fetchall()
    state = empty(session_id)
    between_turns = state
    cut = 0
    for row in rows:
        state = evolve(state, event_from_row(row))
        if state.current_turn is None:
            between_turns, cut = state, row["seq"]
    s = between_turns
    return Source(
        # What the model was sent: a compacted source's summary, not the messages it replaced.
        context.view(s),
        # A fork is kept, whatever its source: an ephemeral run's fork is not deleted.
        s.config.model_copy(update={"ephemeral": False}),
        cut,
        list(s.mcp_tools) if s.mcp_tools is not None else None,
    )
