"""The token estimate, pure: a JSON value's characters over four (as `json.dumps` writes it,
non-ASCII escaped, so other scripts count high), and what a cleared tool result is sent as.
A maintained estimate rather than a tokenizer: no network, no model-specific table, and
never below what the fake Anthropic server counts (tests/unit/test_compaction.py)."""

from __future__ import annotations

import json
import math
from typing import Any

# What a cleared tool result says in place of its content (Anthropic's context editing
# keeps the tool_use / tool_result pair and replaces the result's content).
PLACEHOLDER = "[tool result cleared to save context; the tool was run and its result seen]"


def estimate(value: object) -> int:
    """The estimated tokens of a JSON value: its characters over four, rounded up."""
    return math.ceil(len(json.dumps(value)) / 4)


def cleared(message: dict[str, Any]) -> dict[str, Any]:
    """An API message with each tool result's content replaced by the placeholder."""
    content = message["content"]
    if isinstance(content, str):
        return message
    blocks = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            block = {k: v for k, v in block.items() if k not in ("content", "cache_control")}
            block["content"] = PLACEHOLDER
        blocks.append(block)
    return {**message, "content": blocks}
