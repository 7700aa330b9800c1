"""The built-in offline model: deterministic (same conversation, same answer), no network.

It stands in for Claude when no ANTHROPIC_API_KEY is set. A user message line
`call <ToolName> <JSON input>` makes it ask for that tool (several lines: parallel calls);
once the results are in, it answers quoting the first line of each. Otherwise it answers
from the conversation; asked for a compaction's summary, it lists the first line of each
message. Its usage is plausible (a cached prefix, a cache write of the new
message), so token and cost paths run; a latency setting lets benchmarks mimic a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from typing import Any

from eventstore import context, untrusted
from eventstore.events import Block, StopReason, Usage
from eventstore.models import OFFLINE_MODEL as OFFLINE_MODEL  # the name it answers to
from processors.model.port import ModelRequest, ModelResponse

# Matched on a stripped line: no two runs of spaces compete, so matching is linear in the
# line (a lazy `.*?` before `\s*$` was quadratic in a user's long line of spaces).
CALL_LINE = re.compile(r"call\s+(?P<name>[A-Za-z0-9_-]{1,64})(?:\s+(?P<input>.*))?")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _first_line(content: Any) -> str:
    """The first line of a result, past the line that marks it as untrusted data."""
    text = _text_of(content).strip() if not isinstance(content, str) else content.strip()
    lines = [line for line in text.splitlines() if not line.startswith(untrusted.OPENING)]
    line = lines[0] if lines else "(empty)"
    return line if len(line) <= 200 else line[:200] + "…"


def _calls(text: str, digest: str) -> tuple[list[Block], list[str]]:
    """tool_use blocks for the `call` lines of a message, and the errors of malformed ones."""
    blocks: list[Block] = []
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = CALL_LINE.fullmatch(line.strip())
        if match is None:
            continue
        raw = match.group("input") or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: input is not JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            errors.append(f"line {number}: input must be a JSON object")
            continue
        tool_id = "toolu_off_" + hashlib.sha256(f"{digest}/{len(blocks)}".encode()).hexdigest()[:20]
        blocks.append({"type": "tool_use", "id": tool_id, "name": match.group("name"), "input": value})
    return blocks, errors


def _summary(request: ModelRequest) -> str:
    """A compaction's summary (eventstore/context.py): the first line of each message of the
    conversation it was given, so that what was said stays findable."""
    said = _text_of(request.messages[-1]["content"]) if request.messages else ""
    lines = [line for line in said.splitlines() if line.startswith(("Earlier: ", "User: ", "Assistant: "))]
    return "Earlier: " + " | ".join(line if len(line) <= 80 else line[:80] + "…" for line in lines)


def _reply(request: ModelRequest, digest: str) -> tuple[list[Block], StopReason]:
    if request.system == context.SUMMARY_SYSTEM:
        return [{"type": "text", "text": _summary(request)}], "end_turn"
    last = request.messages[-1] if request.messages else {"role": "user", "content": []}
    content = last["content"]
    blocks = content if isinstance(content, list) else []
    results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
    if results:
        quoted = "; ".join(
            f"{b.get('tool_use_id')}{' (error)' * bool(b.get('is_error'))}: {_first_line(b.get('content'))}"
            for b in results
        )
        return [{"type": "text", "text": f"Tool results: {quoted}"}], "end_turn"
    said = _text_of(content).strip()
    calls, errors = _calls(said, digest)
    if calls:
        text = f"Calling {', '.join(b['name'] for b in calls)}."
        return [{"type": "text", "text": text}, *calls], "tool_use"
    if errors:
        return [{"type": "text", "text": "I could not read your call: " + "; ".join(errors)}], "end_turn"
    turns = sum(1 for m in request.messages if _is_turn(m))
    quoted = said if len(said) <= 200 else said[:200] + "…"
    text = f'You said: "{quoted}". This is turn {turns} of our conversation. [offline {digest}]'
    return [{"type": "text", "text": text}], "end_turn"


def _is_turn(message: Any) -> bool:
    """A user's message, as the api counts turns: not the tool results sent back as one."""
    if message["role"] != "user":
        return False
    content = message["content"]
    return isinstance(content, str) or any(
        not (isinstance(b, dict) and b.get("type") == "tool_result") for b in content
    )


def answer(request: ModelRequest) -> ModelResponse:
    """The offline model's reply to a conversation: a pure function of the request."""
    conversation = json.dumps([request.system, request.messages], sort_keys=True)
    digest = hashlib.sha256(conversation.encode()).hexdigest()[:8]
    content, stop_reason = _reply(request, digest)
    # As if a cache breakpoint sat on the last message: the prefix is read from the cache,
    # the new message is written to it, a few tokens are plain input.
    prefix = (request.system or "") + json.dumps(request.messages[:-1]) + json.dumps(request.tools)
    last = json.dumps(request.messages[-1:])
    usage = Usage(
        input_tokens=4,
        output_tokens=_tokens(json.dumps(content)),
        cache_read_input_tokens=_tokens(prefix) if len(request.messages) > 1 else 0,
        cache_creation_input_tokens=_tokens(last),
    )
    return ModelResponse(model=request.model, content=content, stop_reason=stop_reason, usage=usage)


class OfflineModel:
    """ModelClient adapter for the offline model, with an optional fixed latency."""

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency_s = latency_ms / 1000

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = answer(request)
        text = " ".join(b["text"] for b in response.content if b.get("type") == "text")
        if request.on_text is None or not text:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return response
        # Stream the text in a few pieces over the latency, as a model would.
        words = text.split(" ")
        pieces = [" ".join(words[i : i + 4]) + " " for i in range(0, len(words), 4)]
        pieces[-1] = pieces[-1].rstrip()
        for piece in pieces:
            if self.latency_s:
                await asyncio.sleep(self.latency_s / len(pieces))
            await request.on_text(piece)
        return response
