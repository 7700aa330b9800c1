"""What the model is sent of a long session, pure: the compacted view of its messages, the
token estimate that says when a call would not fit the context window, and the plan of a
compaction (which messages a summary replaces, which tool results are cleared).

Tokens are estimated, not counted (eventstore/tokens.py: JSON characters over four), plus a
few tokens per message for the framing; `MARGIN` tokens of every window are kept for what the
estimate cannot see (cache breakpoints, the system prompt's wrapping). The full history stays in the
state (`SessionState.messages`), the log and SQL; only the request is built from the view.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventstore import untrusted
from eventstore.events import Block
from eventstore.models import DEFAULT_CONTEXT_WINDOW
from eventstore.state import Message, SessionState
from eventstore.tokens import PLACEHOLDER as PLACEHOLDER
from eventstore.tokens import cleared
from eventstore.tokens import estimate as tokens

# Tool results kept whole, the newest ones (as context editing's `keep`).
KEEP_TOOL_RESULTS = 3
MARGIN = 64
PER_MESSAGE = 3
SUMMARY_MAX_TOKENS = 1024
SUMMARY_SYSTEM = (
    "You compact the history of a conversation between a user and an AI assistant that uses"
    " tools. Write a summary the assistant can continue from: the user's goals and requests,"
    " decisions made, facts learned (names, numbers, paths, results of tools), and what was"
    " left to do. Be concise; write only the summary."
)


def window(state: SessionState) -> int:
    """The tokens a model call of the session may fill, input and output together."""
    return state.config.context_window or DEFAULT_CONTEXT_WINDOW


def max_tokens(state: SessionState) -> int:
    """A call's output limit: the session's, at most half of the window."""
    return max(1, min(state.config.max_tokens, window(state) // 2))


def budget(state: SessionState) -> int:
    """The input tokens a call may send: the window less the output limit and the margin."""
    return max(1, window(state) - max_tokens(state) - MARGIN)


def summary_tokens(state: SessionState) -> int:
    """The output limit of a summary call, and so the most a summary takes of the window."""
    return max(16, min(SUMMARY_MAX_TOKENS, budget(state) // 8))


def summary_message(summary: str) -> dict[str, Any]:
    """The user message that stands for the summarised messages."""
    text = f"<summary of the conversation so far>\n{summary}\n</summary of the conversation so far>"
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _as_sent(state: SessionState, index: int, message: Message) -> dict[str, Any]:
    return cleared(message.as_api()) if index < state.cleared_before else message.as_api()


def _sent_tokens(state: SessionState, index: int, message: Message) -> int:
    if index < state.cleared_before:
        return message.cleared_tokens + PER_MESSAGE
    # Once strangers' content came in, results may be sent marked (eventstore/untrusted.py):
    # every result is counted as marked, which errs on the side that fits.
    marks = untrusted.MARK_TOKENS * message.tool_results if state.untrusted else 0
    return message.tokens + marks + PER_MESSAGE


def view(state: SessionState) -> list[dict[str, Any]]:
    """The messages a model call is sent: the summary in place of the messages before
    `compacted_through` (one of the assistant's, so the roles still alternate and every
    tool_result follows its tool_use), then the rest, tool results before `cleared_before`
    cleared."""
    start = state.compacted_through
    out = [summary_message(state.summary)] if start and state.summary is not None else []
    out += [_as_sent(state, start + i, m) for i, m in enumerate(state.messages[start:])]
    return out


def overhead(state: SessionState, tool_tokens: Mapping[str, int]) -> int:
    """The estimated tokens a call sends besides its messages: the system prompt and the tool
    definitions (`tool_tokens` by name, for the built-in and users' tools; the MCP ones are
    in the state)."""
    allowed = (
        tool_tokens.values()
        if state.config.tools is None
        else [tool_tokens.get(t, 0) for t in state.config.tools]
    )
    mcp = sum(tokens(t.definition()) for t in state.mcp_tools or ())
    return tokens(state.config.system or "") + sum(allowed) + mcp


def request_tokens(state: SessionState, pending: list[Block], extra: int) -> int:
    """The estimated input of the session's next call: its view, the tool results it will
    carry (`pending`), and `extra` (the overhead)."""
    start = state.compacted_through
    sent = tokens(summary_message(state.summary)) + PER_MESSAGE if start and state.summary is not None else 0
    sent += sum(_sent_tokens(state, start + i, m) for i, m in enumerate(state.messages[start:]))
    return sent + (tokens(pending) + PER_MESSAGE if pending else 0) + extra


@dataclass(frozen=True)
class Plan:
    """A compaction: the summary covers the messages before `through`; tool results before
    `clear_before` are cleared; `tokens_before` is the call's estimate without it."""

    through: int
    clear_before: int
    tokens_before: int


def _clear_point(state: SessionState, pending: list[Block]) -> int:
    """The index before which tool results are cleared: the newest `KEEP_TOOL_RESULTS`
    results (those the call carries first) stay whole."""
    kept = sum(1 for b in pending if b.get("type") == "tool_result")
    index = len(state.messages)
    for message in reversed(state.messages):
        if kept >= KEEP_TOOL_RESULTS or index <= state.cleared_before:
            break
        index -= 1
        kept += sum(1 for b in message.content if b.get("type") == "tool_result")
    return max(index, state.cleared_before)


def plan(state: SessionState, pending: list[Block], tool_tokens: Mapping[str, int]) -> Plan | None:
    """The compaction the session's next call needs, or None when it fits the window.

    Clearing old tool results comes first; if that leaves the call over three quarters of
    the budget, the oldest messages are summarised too, keeping the longest tail (from one of
    the assistant's messages) that fits in half of it, or failing that the shortest one.
    """
    extra = overhead(state, tool_tokens)
    before = request_tokens(state, pending, extra)
    limit = budget(state)
    if before <= limit:
        return None
    clear_before = _clear_point(state, pending)
    after = state.model_copy(update={"cleared_before": clear_before})
    if request_tokens(after, pending, extra) <= limit * 3 // 4:
        return Plan(state.compacted_through, clear_before, before)
    fixed = (
        extra + (tokens(pending) + PER_MESSAGE if pending else 0) + summary_tokens(state) + 2 * PER_MESSAGE
    )
    start = state.compacted_through
    sizes = [_sent_tokens(after, start + i, m) for i, m in enumerate(state.messages[start:])]
    through, tail = start, sum(sizes)
    for i, size in enumerate(sizes):
        index = start + i
        if index > start and state.messages[index].role == "assistant":
            through = index
            if tail + fixed <= limit // 2:
                break
        tail -= size
    if through == start and clear_before == state.cleared_before:
        return None  # nothing left to compact: the call goes as it is
    return Plan(through, clear_before, before)


def _block_text(block: Block) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return f"[called {block.get('name')} with {json.dumps(block.get('input'))}]"
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        text = str(content)
        text = text if len(text) <= 2000 else text[:2000] + "…"
        return f"[tool result{' (error)' if block.get('is_error') else ''}: {text}]"
    return ""  # thinking and other blocks are not summarised


def transcript(state: SessionState, through: int) -> str:
    """The text a summary is made from: the previous summary, then the messages it does not
    cover up to `through`, one line per message."""
    lines = [f"Summary of what came before:\n{state.summary}"] if state.summary else []
    for message in state.messages[state.compacted_through : through]:
        said = " ".join(t for t in (_block_text(b) for b in message.content) if t)
        lines.append(f"{message.role.capitalize()}: {said}")
    return "\n\n".join(lines)


def summary_prompt(state: SessionState, through: int) -> list[dict[str, Any]]:
    """The messages of a summary call, cut from the front to fit the window."""
    text = transcript(state, through)
    room = budget(state) - summary_tokens(state) - tokens(SUMMARY_SYSTEM) - 2 * PER_MESSAGE - 64
    while True:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"<conversation>\n{text}\n</conversation>\nSummarise it."}
                ],
            }
        ]
        if tokens(messages) <= room or len(text) <= 2:
            return messages
        text = "…" + text[len(text) // 10 + 2 :]  # shorter by at least one character a round


def clip_summary(text: str, state: SessionState) -> str:
    """A summary cut to its share of the window, whatever the model wrote."""
    limit = summary_tokens(state) * 4 - 80
    if len(json.dumps(text)) <= limit:
        return text
    while text and len(json.dumps(text + "…")) > limit:
        text = text[: len(text) * 3 // 4]
    return text + "…"


def compacted(state: SessionState, through: int, clear_before: int, summary: str | None) -> SessionState:
    """The state as it would be with this compaction applied (for its estimate)."""
    return state.model_copy(
        update={"compacted_through": through, "cleared_before": clear_before, "summary": summary}
    )
