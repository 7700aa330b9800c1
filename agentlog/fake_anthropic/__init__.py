"""A fake Anthropic Messages API on loopback, for tests, load tests and worker subprocesses.

It serves `POST /v1/messages` (JSON, or SSE when the body asks for `"stream": true`) and
`POST /v1/messages/count_tokens` from a daemon thread, so it needs no event loop. Replies
are scripted (`script(...)`, consumed in order) or made by `default` (a reply or a function
of the request); `latency_s` makes every message reply take that long.

    with FakeAnthropic(latency_s=0.5, default=sized(1000, 200)) as fake:
        fake.script(tool_use(("get_weather", {"city": "Paris"})), text("Sunny."))
        client = AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=0)

`python -m agentlog.fake_anthropic --latency-ms 1000 --output-tokens 200` serves it alone.
"""

from agentlog.fake_anthropic.replies import (
    STOP_REASONS,
    Block,
    Kind,
    Reply,
    Scripted,
    cut,
    default_reply,
    error,
    error_body,
    estimate_tokens,
    hang,
    invalid_request,
    message,
    message_json,
    new_id,
    overloaded,
    rate_limited,
    server_error,
    short_stream,
    sized,
    sse_frame,
    stop,
    stream_error,
    stream_events,
    text,
    text_block,
    thinking,
    thinking_block,
    tool_use,
    tool_use_block,
    usage,
)
from agentlog.fake_anthropic.server import FakeAnthropic, main

__all__ = [
    "STOP_REASONS",
    "Block",
    "FakeAnthropic",
    "Kind",
    "Reply",
    "Scripted",
    "cut",
    "default_reply",
    "error",
    "error_body",
    "estimate_tokens",
    "hang",
    "invalid_request",
    "main",
    "message",
    "message_json",
    "new_id",
    "overloaded",
    "rate_limited",
    "server_error",
    "short_stream",
    "sized",
    "sse_frame",
    "stop",
    "stream_error",
    "stream_events",
    "text",
    "text_block",
    "thinking",
    "thinking_block",
    "tool_use",
    "tool_use_block",
    "usage",
]
