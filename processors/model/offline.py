"""The built-in offline model: deterministic (same conversation, same answer), no network.

It stands in for Claude when no ANTHROPIC_API_KEY is set, and reports plausible usage so
that token and cost paths run; a latency setting lets benchmarks mimic a real model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import Any

from eventstore.events import Usage
from processors.model.port import ModelRequest, ModelResponse

OFFLINE_MODEL = "agentlog-offline-1"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def answer(request: ModelRequest) -> ModelResponse:
    """The offline model's reply to a conversation: a pure function of the request."""
    said = _text_of(request.messages[-1]["content"]).strip() if request.messages else ""
    turns = sum(1 for m in request.messages if m["role"] == "user")
    digest = hashlib.sha256(
        json.dumps([request.system, request.messages], sort_keys=True).encode()
    ).hexdigest()[:8]
    quoted = said if len(said) <= 200 else said[:200] + "…"
    reply = f'You said: "{quoted}". This is turn {turns} of our conversation. [offline {digest}]'
    prompt = (request.system or "") + json.dumps(request.messages)
    usage = Usage(input_tokens=_tokens(prompt), output_tokens=_tokens(reply))
    return ModelResponse(
        model=request.model,
        content=[{"type": "text", "text": reply}],
        stop_reason="end_turn",
        usage=usage,
    )


class OfflineModel:
    """ModelClient adapter for the offline model, with an optional fixed latency."""

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency_s = latency_ms / 1000

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return answer(request)
