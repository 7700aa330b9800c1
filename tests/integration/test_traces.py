"""One trace per turn: the api's request span, the turn's `invoke_agent`, `chat {model}` per
model call and `execute_tool {name}` per tool, connected across processes by `traceparent`
in the events' envelopes and the Kafka record headers (in-memory exporter)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventstore import codec
from eventstore.log import partition_for, read_partition
from eventstore.models import CLAUDE_DEFAULT
from observe import tracing
from processors.tools.registry import Echo, Registry
from tests.fakes import anthropic as fake
from tests.services import Stack, stack_on, wait_until

MODEL = CLAUDE_DEFAULT
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    processor = SimpleSpanProcessor(spans)
    tracing.configure(extra=processor)
    yield spans
    spans.shutdown()  # the processor stays (a provider cannot drop one); nothing more is kept


@pytest.fixture
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server, log_dir, anthropic_base_url=claude.base_url, anthropic_api_key="k"
    ) as stack:
        await stack.start("reactor", "model", "tools", "projector", tools=Registry([Echo()]))
        await stack.start_api()
        yield stack


def _of(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def _turn_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The turn spans, once the request's span has ended too (it ends after its response)."""

    async def ended() -> list[ReadableSpan] | None:
        spans = exporter.get_finished_spans()
        posted = any(s.name.startswith("POST ") for s in spans)
        return (_of(spans, "invoke_agent") or None) if posted else None

    found: list[ReadableSpan] = await wait_until(ended, within=10)
    return found


async def test_a_turn_is_one_connected_trace_across_api_reactor_model_worker_and_executor(
    stack: Stack, claude: fake.FakeAnthropic, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    claude.script(
        fake.tool_use(
            ("Echo", {"text": "ping"}),
            usage={"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 30},
        ),
        fake.text("pong", usage={"input_tokens": 60, "output_tokens": 3}),
    )
    sid = "traced1"
    caller = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.post(
            f"/v1/sessions/{sid}/messages?wait=30",
            json={"content": "echo ping", "model": MODEL, "tools": ["Echo"]},
            headers={"traceparent": caller},
        )
        assert r.status_code == 200, r.text
        turn_id = r.json()["turn_id"]

    invoked = await _turn_spans(exporter)
    spans = exporter.get_finished_spans()
    [post] = [s for s in spans if s.name == "POST /v1/sessions/{session_id}/messages"]
    [turn] = invoked
    chats = _of(spans, f"chat {MODEL}")
    [tool] = _of(spans, "execute_tool Echo")
    assert len(chats) == 2

    # One trace, continuing the caller's, every part parented to the turn.
    assert {s.context.trace_id for s in [post, turn, *chats, tool]} == {int(CALLER_TRACE, 16)}
    assert (
        post.kind == SpanKind.SERVER and post.parent is not None and post.parent.span_id == 0x00F067AA0BA902B7
    )
    assert turn.parent is not None and turn.parent.span_id == post.context.span_id
    for child in (*chats, tool):
        assert child.parent is not None and child.parent.span_id == turn.context.span_id

    # GenAI attributes, cache tokens included; the turn spans its start to its end.
    first = min(chats, key=lambda s: s.start_time or 0)
    assert first.kind == SpanKind.CLIENT
    assert first.attributes is not None
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.provider.name"] == "anthropic"
    assert first.attributes["gen_ai.request.model"] == MODEL
    assert first.attributes["gen_ai.usage.input_tokens"] == 40
    assert first.attributes["gen_ai.usage.cache_read.input_tokens"] == 30
    assert tuple(first.attributes["gen_ai.response.finish_reasons"]) == ("tool_use",)  # type: ignore[arg-type]
    assert tool.attributes is not None and tool.attributes["gen_ai.tool.name"] == "Echo"
    assert turn.attributes is not None
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["gen_ai.conversation.id"] == sid
    assert turn.attributes["gen_ai.usage.input_tokens"] == 100
    assert turn.attributes["agentlog.steps"] == 2
    assert turn.status.status_code != StatusCode.ERROR
    assert (turn.start_time or 0) <= min(s.start_time or 0 for s in (*chats, tool))
    assert (turn.end_time or 0) >= max(s.end_time or 0 for s in (*chats, tool))

    # The context rides in the stored envelopes and in the records' headers.
    own = f"{turn.context.trace_id:032x}-{turn.context.span_id:016x}"
    records = [r async for r in read_partition(stack.settings, partition_for(sid, stack.settings.partitions))]
    mine = [(r, codec.decode(r.value, r.headers)) for r in records if r.key == sid.encode()]
    in_turn = [(r, e) for r, e in mine if e.turn_id == turn_id and e.type != "user_message"]
    assert in_turn and all(e.traceparent is not None and own in e.traceparent for _, e in in_turn)
    assert all(dict(r.headers)["traceparent"] == (e.traceparent or "").encode() for r, e in in_turn)
    [(_, message)] = [(r, e) for r, e in mine if e.type == "user_message"]
    assert message.traceparent is not None and f"{post.context.span_id:016x}" in message.traceparent


async def test_a_failed_model_call_marks_its_span_and_the_turn(
    stack: Stack, claude: fake.FakeAnthropic, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    claude.script(fake.invalid_request())
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.post("/v1/sessions/traced2/messages?wait=30", json={"content": "hi", "model": MODEL})
        assert r.status_code == 200, r.text
    [turn] = await _turn_spans(exporter)
    [chat] = _of(exporter.get_finished_spans(), f"chat {MODEL}")
    assert chat.status.status_code == StatusCode.ERROR
    assert turn.status.status_code == StatusCode.ERROR
    assert chat.parent is not None and chat.parent.span_id == turn.context.span_id
    # Without a caller's traceparent, the api's span starts the trace.
    [post] = [s for s in exporter.get_finished_spans() if s.name.startswith("POST ")]
    assert post.parent is None and turn.context.trace_id == post.context.trace_id


async def test_a_caller_that_does_not_sample_leaves_the_whole_turn_out(
    stack: Stack, claude: fake.FakeAnthropic, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.post(
            "/v1/sessions/traced3/messages?wait=30",
            json={"content": "hi", "model": MODEL},
            headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-00"},
        )
        assert r.status_code == 200, r.text
        posted = await client.post(
            "/v1/sessions/traced4/messages?wait=30", json={"content": "hi again", "model": MODEL}
        )
        assert posted.status_code == 200, posted.text
    # The second (sampled) turn's spans arrive; none of the first's ever does.
    await _turn_spans(exporter)
    spans = exporter.get_finished_spans()
    assert all(s.context.trace_id != int(CALLER_TRACE, 16) for s in spans)
    assert {s.attributes.get("gen_ai.conversation.id") for s in spans if s.attributes} >= {"traced4"}
    assert "traced3" not in {s.attributes.get("gen_ai.conversation.id") for s in spans if s.attributes}
