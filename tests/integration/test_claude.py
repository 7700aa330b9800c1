"""ClaudeModel through the real `anthropic` SDK against the fake Messages API on loopback."""

from __future__ import annotations

import copy
import json
import socket
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import httpx2
import pytest

from eventstore.events import Usage
from eventstore.models import CLAUDE_DEFAULT
from processors.model.claude import ClaudeModel, request_params, retry_after, sdk_deprecations
from processors.model.port import ModelError, ModelRequest
from processors.model.retry import RetryPolicy
from tests.fakes import anthropic as api
from tests.fakes.anthropic import FakeAnthropic

MODEL = CLAUDE_DEFAULT
FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.02, deadline_s=10.0)
EPHEMERAL = {"type": "ephemeral"}
both_paths = pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])


class MakeModel(Protocol):
    def __call__(
        self, *, stream: bool = ..., retry: RetryPolicy = ..., timeout_s: float = ..., cache: bool = ...
    ) -> ClaudeModel: ...


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    return server


@pytest.fixture
async def make_model(fake: FakeAnthropic) -> AsyncIterator[MakeModel]:
    made: list[ClaudeModel] = []

    def make(
        *, stream: bool = True, retry: RetryPolicy = FAST, timeout_s: float = 10.0, cache: bool = True
    ) -> ClaudeModel:
        model = ClaudeModel(
            "sk-test", fake.base_url, timeout_s=timeout_s, stream=stream, retry=retry, cache=cache
        )
        made.append(model)
        return model

    yield make
    for model in made:
        await model.aclose()


def ask(text: str = "Hello", **kw: Any) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def breakpoints(value: Any) -> int:
    if isinstance(value, dict):
        return int("cache_control" in value) + sum(breakpoints(v) for v in value.values())
    if isinstance(value, list):
        return sum(breakpoints(v) for v in value)
    return 0


@both_paths
async def test_text(fake: FakeAnthropic, make_model: MakeModel, stream: bool) -> None:
    fake.script(api.text("Hi there, how can I help?"))
    response = await make_model(stream=stream).complete(ask())
    assert response.content == [{"type": "text", "text": "Hi there, how can I help?"}]
    assert response.stop_reason == "end_turn"
    assert response.model == MODEL
    assert response.attempts == 1
    assert fake.calls == 1
    assert fake.requests[0].get("stream", False) is stream
    assert fake.request_headers[0]["x-stainless-retry-count"] == "0"


@both_paths
async def test_parallel_tool_use_blocks_arrive_verbatim(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    reply = api.tool_use(
        ("get_weather", {"city": "Paris", "units": None}),
        ("get_time", {"tz": "Europe/Paris"}),
        ("search", {"q": "louvre", "filters": {"open": True, "tags": ["art", 1, 2.5]}}),
    )
    fake.script(reply)
    response = await make_model(stream=stream).complete(ask("Weather, time, museum?"))
    assert response.content == list(reply.content)
    assert len({b["id"] for b in response.content}) == 3
    assert all(b["id"].startswith("toolu_") for b in response.content)
    assert response.stop_reason == "tool_use"


@both_paths
@pytest.mark.parametrize("reason", [r for r in api.STOP_REASONS if r != "tool_use"])
async def test_each_stop_reason_comes_back(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool, reason: str
) -> None:
    fake.script(api.stop(reason))
    response = await make_model(stream=stream).complete(ask())
    assert response.stop_reason == reason
    assert response.content == [{"type": "text", "text": "Partial answer"}]


@both_paths
async def test_thinking_signature_survives_the_round_trip(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    signature = "EqQBCkYIBRgCKkA" + "x" * 200 + "=="
    fake.script(api.thinking("Let me think about the weather.", api.text("Sunny."), signature=signature))
    model = make_model(stream=stream)
    response = await model.complete(ask())
    assert response.content == [
        {"type": "thinking", "thinking": "Let me think about the weather.", "signature": signature},
        {"type": "text", "text": "Sunny."},
    ]
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": response.content},
        {"role": "user", "content": "And tomorrow?"},
    ]
    await model.complete(ModelRequest(model=MODEL, messages=history))
    assert fake.requests[1]["messages"][1]["content"] == response.content


@both_paths
async def test_unknown_block_types_survive(fake: FakeAnthropic, make_model: MakeModel, stream: bool) -> None:
    future = {"type": "hologram", "payload": {"frames": [1, None, 3]}, "id": "holo_1"}
    fake.script(api.message(future, api.text_block("done")))
    response = await make_model(stream=stream).complete(ask())
    assert response.content == [future, {"type": "text", "text": "done"}]


@both_paths
async def test_usage_includes_cache_tokens(fake: FakeAnthropic, make_model: MakeModel, stream: bool) -> None:
    fake.script(api.text("ok", usage=api.usage(100, 20, 30, 40)))
    response = await make_model(stream=stream).complete(ask())
    assert response.usage == Usage(
        input_tokens=100, output_tokens=20, cache_creation_input_tokens=30, cache_read_input_tokens=40
    )


@both_paths
async def test_rate_limit_honours_retry_after(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    fake.script(api.rate_limited(retry_after=0.2), api.text("after the wait"))
    policy = RetryPolicy(max_attempts=3, base_s=0.001, max_backoff_s=0.001, deadline_s=10.0)
    started = time.monotonic()
    response = await make_model(stream=stream, retry=policy).complete(ask())
    elapsed = time.monotonic() - started
    assert response.attempts == 2
    assert response.content == [{"type": "text", "text": "after the wait"}]
    assert elapsed >= 0.19  # the backoff alone would have waited 1 ms
    assert fake.calls == 2


@both_paths
@pytest.mark.parametrize("error", [api.server_error(), api.overloaded()], ids=["500", "529"])
async def test_server_errors_are_retried(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool, error: api.Reply
) -> None:
    fake.script(error, error, api.text("third time lucky"))
    response = await make_model(stream=stream).complete(ask())
    assert response.attempts == 3
    assert fake.calls == 3


async def test_overloaded_until_give_up_and_the_sdk_does_not_retry(
    fake: FakeAnthropic, make_model: MakeModel
) -> None:
    fake.default = lambda request: api.overloaded()
    with pytest.raises(ModelError) as info:
        await make_model(retry=RetryPolicy(max_attempts=2, base_s=0.01)).complete(ask())
    assert info.value.reason == "gave up after 2 attempts: 529 overloaded_error: Overloaded"
    assert info.value.retryable is False
    assert info.value.status == 529
    assert fake.calls == 2  # one HTTP request per attempt: the SDK's own retries are off


@both_paths
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
    ],
)
async def test_client_errors_are_not_retried(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool, status: int, kind: str
) -> None:
    fake.script(api.error(status, kind, "messages.0.content: Field required"))
    with pytest.raises(ModelError) as info:
        await make_model(stream=stream).complete(ask())
    assert info.value.reason == f"{status} {kind}: messages.0.content: Field required"
    assert info.value.retryable is False
    assert info.value.status == status
    assert fake.calls == 1


@both_paths
async def test_hang_times_out_is_retried_then_gives_up(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    fake.script(api.hang(5), api.hang(5))
    policy = RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.01, deadline_s=10.0)
    with pytest.raises(ModelError) as info:
        await make_model(stream=stream, retry=policy, timeout_s=0.4).complete(ask())
    assert info.value.reason.startswith("gave up after 2 attempts: request timed out")
    assert info.value.retryable is False
    assert fake.calls == 2


@both_paths
async def test_cut_connection_is_retried(fake: FakeAnthropic, make_model: MakeModel, stream: bool) -> None:
    fake.script(api.cut(), api.text("whole this time"))
    response = await make_model(stream=stream).complete(ask())
    assert response.attempts == 2
    assert response.content == [{"type": "text", "text": "whole this time"}]


@both_paths
async def test_cut_reason_names_the_connection(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    fake.default = lambda request: api.cut()
    with pytest.raises(ModelError) as info:
        await make_model(stream=stream, retry=RetryPolicy(max_attempts=1)).complete(ask())
    assert info.value.reason.startswith("gave up after 1 attempt: connection error: RemoteProtocolError")


async def test_stream_ending_before_message_stop_is_retried(
    fake: FakeAnthropic, make_model: MakeModel
) -> None:
    fake.script(api.short_stream(), api.short_stream())
    with pytest.raises(ModelError) as info:
        await make_model(retry=RetryPolicy(max_attempts=2, base_s=0.01)).complete(ask())
    assert info.value.reason == "gave up after 2 attempts: stream ended before message_stop"
    assert fake.calls == 2


async def test_error_event_mid_stream_is_retried(fake: FakeAnthropic, make_model: MakeModel) -> None:
    fake.script(api.stream_error("overloaded_error", "Overloaded"), api.text("ok"))
    response = await make_model(stream=True).complete(ask())
    assert response.attempts == 2


async def test_error_event_mid_stream_of_a_bad_request_is_final(
    fake: FakeAnthropic, make_model: MakeModel
) -> None:
    fake.script(api.stream_error("invalid_request_error", "bad"))
    with pytest.raises(ModelError) as info:
        await make_model(stream=True).complete(ask())
    assert info.value.reason == "stream error invalid_request_error: bad"
    assert not info.value.retryable


async def test_nothing_listening_is_a_connection_error(make_model: MakeModel) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = ClaudeModel(api_key="sk-test", base_url=f"http://127.0.0.1:{port}", retry=FAST)
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert info.value.reason.startswith("gave up after 3 attempts: connection error: ")


async def test_whatever_the_sdk_raises_becomes_a_model_error(
    fake: FakeAnthropic, make_model: MakeModel
) -> None:
    content = [{"type": "text", "text": b"\xff"}]  # bytes: the SDK cannot serialise the body
    unsendable = ModelRequest(model=MODEL, messages=[{"role": "user", "content": content}])
    with pytest.raises(ModelError) as info:
        await make_model().complete(unsendable)
    assert info.value.reason == "TypeError: Object of type bytes is not JSON serializable"
    assert not info.value.retryable
    assert fake.calls == 0


# -- prompt caching ------------------------------------------------------------------------------------

TOOLS = [
    {"name": "get_weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {}}},
    {"name": "get_time", "description": "Time.", "input_schema": {"type": "object", "properties": {}}},
]
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "What's the weather and time in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
        ],
    },
]


@both_paths
async def test_cache_breakpoints_reach_the_server(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    request = ModelRequest(model=MODEL, messages=HISTORY, system="You are terse.", tools=TOOLS)
    before = copy.deepcopy((request.messages, request.tools))
    await make_model(stream=stream).complete(request)
    body = fake.requests[0]
    assert body["system"] == [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}]
    assert body["tools"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in body["tools"][0]
    last = body["messages"][-1]["content"]
    assert last[-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in last[0]
    assert breakpoints(body) == 3
    assert (request.messages, request.tools) == before  # the caller's dicts are untouched


async def test_no_cache_sends_the_request_as_given(fake: FakeAnthropic, make_model: MakeModel) -> None:
    request = ModelRequest(model=MODEL, messages=HISTORY, system="You are terse.", tools=TOOLS, max_tokens=77)
    await make_model(cache=False).complete(request)
    body = fake.requests[0]
    assert breakpoints(body) == 0
    assert body["system"] == "You are terse."
    assert body["messages"] == HISTORY
    assert body["tools"] == TOOLS
    assert body["model"] == MODEL
    assert body["max_tokens"] == 77


def test_empty_system_and_tools_are_omitted() -> None:
    params = request_params(ModelRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}]))
    assert set(params) == {"model", "max_tokens", "messages"}
    assert params["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}]}
    ]


def test_breakpoints_never_exceed_four() -> None:
    history = copy.deepcopy(HISTORY)
    history[0]["content"] = [{"type": "text", "text": "q", "cache_control": EPHEMERAL}]
    history[1]["content"][0]["cache_control"] = EPHEMERAL
    history[2]["content"][0]["content"] = [{"type": "text", "text": "Sunny", "cache_control": EPHEMERAL}]
    params = request_params(ModelRequest(model=MODEL, messages=history, system="s", tools=TOOLS))
    assert breakpoints(params) == 4
    assert params["messages"][-1]["content"][-1]["cache_control"] == EPHEMERAL  # the most valuable one
    assert params["system"] == "s"
    assert "cache_control" not in params["tools"][-1]


def test_breakpoint_skips_thinking_blocks_and_keeps_existing_ones() -> None:
    prefill = {"role": "assistant", "content": [{"type": "text", "text": "a"}, api.thinking_block("t")]}
    params = request_params(ModelRequest(model=MODEL, messages=[prefill]))
    assert params["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in params["messages"][0]["content"][1]
    marked = {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": EPHEMERAL}]}
    assert breakpoints(request_params(ModelRequest(model=MODEL, messages=[marked]))) == 1


# -- the rest of the SDK against the fake ----------------------------------------------------------------


async def test_count_tokens(fake: FakeAnthropic, make_model: MakeModel) -> None:
    model = make_model()
    params = request_params(ModelRequest(model=MODEL, messages=HISTORY, system="s", tools=TOOLS))
    params.pop("max_tokens")
    counted = await model.client.messages.count_tokens(**params)
    assert counted.input_tokens == api.estimate_tokens(fake.count_requests[0])
    assert counted.input_tokens > 10
    assert fake.calls == 0


def test_retry_after_header_forms() -> None:
    assert retry_after(httpx2.Headers({"retry-after": "7"})) == 7.0
    assert retry_after(httpx2.Headers({"retry-after": "0.25"})) == 0.25
    assert retry_after(httpx2.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    assert retry_after(httpx2.Headers({"retry-after": date}), now=1445412480.0) == 30.0  # 07:28:00
    assert retry_after(httpx2.Headers({"retry-after": date})) == 0.0  # in the past
    assert retry_after(httpx2.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx2.Headers({})) is None


def test_the_fake_streams_the_real_event_sequence(fake: FakeAnthropic) -> None:
    reply = api.thinking("hmm", api.tool_use(("f", {"a": 1})))
    events = [e["type"] for e in api.stream_events(reply, {"model": MODEL})]
    assert events[:2] == ["message_start", "ping"]
    assert events[-2:] == ["message_delta", "message_stop"]
    deltas = [
        e["delta"]["type"]
        for e in api.stream_events(reply, {"model": MODEL})
        if e["type"] == "content_block_delta"
    ]
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= set(deltas)
    assert json.loads(json.dumps(api.message_json(reply, {"model": MODEL})))["id"].startswith("msg_")


@pytest.mark.parametrize("cache", [True, False])
def test_breakpoints_stored_in_a_long_history_never_exceed_four(cache: bool) -> None:
    # A client posted a breakpoint with every message; the history now holds six of them.
    history: list[dict[str, Any]] = []
    for i in range(6):
        history.append(
            {"role": "user", "content": [{"type": "text", "text": f"q{i}", "cache_control": EPHEMERAL}]}
        )
        history.append({"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]})
    history.append({"role": "user", "content": "last"})
    before = copy.deepcopy(history)
    params = request_params(ModelRequest(model=MODEL, messages=history, system="s", tools=TOOLS), cache=cache)
    assert breakpoints(params) <= 4
    # The newest stored ones stay; with caching on, the last message has ours.
    assert "cache_control" in params["messages"][-3]["content"][0]
    assert "cache_control" not in params["messages"][0]["content"][0]
    if cache:
        assert params["messages"][-1]["content"][-1]["cache_control"] == EPHEMERAL
    assert history == before


@both_paths
async def test_a_deprecated_model_answers_and_is_flagged_even_where_warnings_are_errors(
    fake: FakeAnthropic, make_model: MakeModel, stream: bool
) -> None:
    # Whichever names the installed SDK deprecates this month: the test depends on none.
    deprecated = next(iter(sdk_deprecations()), None)
    if deprecated is None:
        pytest.skip("the installed SDK marks no model deprecated")
    fake.script(api.text("still here"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as in the suite: a warning that escapes is an exception
        response = await make_model(stream=stream).complete(
            ModelRequest(model=deprecated, messages=[{"role": "user", "content": "hi"}])
        )
    assert response.content == [{"type": "text", "text": "still here"}]
    assert response.deprecated == sdk_deprecations()[deprecated]


async def test_a_current_model_is_not_flagged(fake: FakeAnthropic, make_model: MakeModel) -> None:
    fake.script(api.text("hello"))
    response = await make_model().complete(ask())
    assert response.deprecated is None
