"""The fake Anthropic Messages API's replies and wire format: scripted answers as values, and
the JSON and SSE bodies the real API would send for them. No I/O here; `server` serves them."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from eventstore.events import StopReason
from eventstore.models import CLAUDE_DEFAULT

Block = dict[str, Any]
Kind = Literal["message", "error", "hang", "cut", "short", "stream_error"]

STOP_REASONS: tuple[str, ...] = get_args(StopReason)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an assistant message, an HTTP error, a hang or a cut connection."""

    kind: Kind = "message"
    content: tuple[Block, ...] = ()
    stop_reason: str | None = "end_turn"
    stop_sequence: str | None = None
    usage: dict[str, int] | None = None  # None: estimated from the request and the content
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


Scripted = Reply | Callable[[dict[str, Any]], Reply]

# -- reply helpers ---------------------------------------------------------------------------------------


def usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> dict[str, int]:
    """A usage record for a reply."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }


def text_block(text: str) -> Block:
    """A text content block."""
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: dict[str, Any], id: str | None = None) -> Block:
    """A tool_use content block with a fresh `toolu_` id unless one is given."""
    return {"type": "tool_use", "id": id or new_id("toolu_"), "name": name, "input": input}


def thinking_block(thinking: str, signature: str | None = None) -> Block:
    """A thinking content block with its signature (a made-up one unless given)."""
    sig = signature if signature is not None else "sig_" + uuid.uuid4().hex * 2
    return {"type": "thinking", "thinking": thinking, "signature": sig}


def message(
    *blocks: Block,
    stop_reason: str = "end_turn",
    stop_sequence: str | None = None,
    usage: dict[str, int] | None = None,
) -> Reply:
    """An assistant message made of any blocks, known or not."""
    return Reply(content=blocks, stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage)


def text(text: str, stop_reason: str = "end_turn", usage: dict[str, int] | None = None) -> Reply:
    """A text reply."""
    return message(text_block(text), stop_reason=stop_reason, usage=usage)


def tool_use(*calls: tuple[str, dict[str, Any]], usage: dict[str, int] | None = None) -> Reply:
    """One or more (parallel) tool_use blocks, stop_reason `tool_use`."""
    return message(*(tool_use_block(name, args) for name, args in calls), stop_reason="tool_use", usage=usage)


def thinking(thought: str, answer: Reply, signature: str | None = None) -> Reply:
    """`answer` preceded by a signed thinking block."""
    return replace(answer, content=(thinking_block(thought, signature), *answer.content))


def stop(reason: str, text: str = "Partial answer") -> Reply:
    """A text reply that ends with `reason` (`stop_sequence` also reports the sequence `###`)."""
    if reason not in STOP_REASONS:
        raise ValueError(f"unknown stop reason {reason!r}")
    sequence = "###" if reason == "stop_sequence" else None
    return message(text_block(text), stop_reason=reason, stop_sequence=sequence)


def error(status: int, type: str, message: str, retry_after: float | str | None = None) -> Reply:
    """An HTTP error in the API's shape; `retry_after` becomes the `retry-after` header."""
    headers = () if retry_after is None else (("retry-after", _header_value(retry_after)),)
    return Reply(kind="error", status=status, error_type=type, error_message=message, headers=headers)


def rate_limited(retry_after: float | str = 1) -> Reply:
    """429 rate_limit_error with a retry-after header."""
    message = "Number of request tokens has exceeded your rate limit."
    return error(429, "rate_limit_error", message, retry_after)


def overloaded() -> Reply:
    """529 overloaded_error."""
    return error(529, "overloaded_error", "Overloaded")


def server_error() -> Reply:
    """500 api_error."""
    return error(500, "api_error", "Internal server error")


def invalid_request(message: str = "messages: at least one message is required") -> Reply:
    """400 invalid_request_error."""
    return error(400, "invalid_request_error", message)


def stream_error(type: str = "overloaded_error", message: str = "Overloaded") -> Reply:
    """An `error` event after message_start (streaming); as JSON, the matching HTTP error."""
    return Reply(kind="stream_error", status=529, error_type=type, error_message=message)


def hang(seconds: float) -> Reply:
    """Hold the connection for `seconds` without answering, then close it."""
    return Reply(kind="hang", seconds=seconds)


def cut(text: str = "This answer will be cut off before it ends") -> Reply:
    """Close the connection mid-message: after a few SSE events, or inside the JSON body."""
    return Reply(kind="cut", content=(text_block(text),))


def short_stream(text: str = "This stream ends politely, but too soon") -> Reply:
    """A stream that ends cleanly (a complete HTTP body) before message_delta and message_stop."""
    return Reply(kind="short", content=(text_block(text),))


def default_reply(request: dict[str, Any]) -> Reply:
    """The reply when nothing is scripted: a short end_turn text."""
    return text("Hello from the fake model.")


def sized(
    input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_write_tokens: int = 0
) -> Reply:
    """A text reply of about `output_tokens` tokens (four characters each) reporting exactly
    this usage, whatever the request: for load tests that want known token counts."""
    words = itertools.cycle(("agent", "log", "event", "turn", "replay", "tokens"))
    body = ""
    while len(body) < 4 * max(1, output_tokens):
        body += next(words) + " "
    return text(
        body.strip(),
        usage=usage(input_tokens, output_tokens, cache_write_tokens, cache_read_tokens),
    )


# -- wire format -----------------------------------------------------------------------------------------

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id in the API's style (`msg_...`, `toolu_...`, `req_...`)."""
    return f"{prefix}01{uuid.uuid4().hex[:16]}{next(_ids):06d}"


def _header_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def estimate_tokens(request: dict[str, Any]) -> int:
    """A deterministic token estimate of a request: its JSON size over four."""
    counted = {k: request.get(k) for k in ("system", "messages", "tools")}
    return max(1, math.ceil(len(json.dumps(counted, sort_keys=True)) / 4))


def _content_tokens(content: tuple[Block, ...]) -> int:
    return max(1, math.ceil(len(json.dumps(list(content))) / 4))


def error_body(type: str, message: str) -> dict[str, Any]:
    """The API's error JSON."""
    return {"type": "error", "error": {"type": type, "message": message}}


def _usage_of(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    base = reply.usage or usage(estimate_tokens(request), _content_tokens(reply.content))
    full: dict[str, Any] = {**usage(), **base}
    full["cache_creation"] = {
        "ephemeral_5m_input_tokens": full["cache_creation_input_tokens"],
        "ephemeral_1h_input_tokens": 0,
    }
    full["service_tier"] = "standard"
    return full


def message_json(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    """The complete Message object for a message reply."""
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": request.get("model", CLAUDE_DEFAULT),
        "content": [dict(b) for b in reply.content],
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": _usage_of(reply, request),
    }


def _pieces(s: str, n: int = 3) -> list[str]:
    size = max(1, math.ceil(len(s) / n))
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _block_events(index: int, block: Block) -> Iterator[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        start: Block = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        pieces = _pieces(json.dumps(block["input"]))
        deltas += [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking and block types the fake does not know arrive whole
        start, deltas = dict(block), []
    yield {"type": "content_block_start", "index": index, "content_block": start}
    for delta in deltas:
        yield {"type": "content_block_delta", "index": index, "delta": delta}
    yield {"type": "content_block_stop", "index": index}


def stream_events(reply: Reply, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The SSE events of a message reply, in the API's order."""
    whole = message_json(reply, request)
    final_usage = whole["usage"]
    start_usage = {**final_usage, "output_tokens": 1}
    yield {
        "type": "message_start",
        "message": {**whole, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage},
    }
    yield {"type": "ping"}
    for index, block in enumerate(whole["content"]):
        yield from _block_events(index, block)
    delta_usage = {k: final_usage[k] for k in usage()}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": whole["stop_sequence"]},
        "usage": delta_usage,
    }
    yield {"type": "message_stop"}


def sse_frame(event: dict[str, Any]) -> bytes:
    """One server-sent event on the wire."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
