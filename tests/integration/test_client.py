"""The Python client and the CLI commands built on it, against a real stack: HTTP -> Kafka ->
workers -> Postgres -> HTTP (and SSE), in this process."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from agentlog import devstack
from agentlog.cli import app
from agentlog.client import (
    Agentlog,
    AgentlogError,
    ApiUnreachable,
    AsyncAgentlog,
    NotConfigured,
    SSEParser,
    from_stack,
    locate,
)
from api.models import EventView, SessionView, TextDelta, TurnAccepted, TurnView
from tests.services import Stack, stack_on, wait_until


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    # A little model latency, so that its text streams as deltas while a test listens.
    async with stack_on(pg_server, log_dir, offline_model_latency_ms=200) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


def token(stack: Stack) -> str | None:
    return getattr(stack, "api_token", None)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncAgentlog]:
    async with AsyncAgentlog(stack.api_url or "", token(stack)) as client:
        yield client


def sid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- the async client ------------------------------------------------------------------------


async def test_send_with_wait_answers_the_turn_and_reads_back(client: AsyncAgentlog) -> None:
    session_id = sid("wait")
    made = await client.create_session(session_id=session_id, system="be brief", metadata={"team": "a"})
    assert isinstance(made, SessionView) and made.id == session_id
    turn = await client.send(session_id, "What is agentlog?", wait=30)
    assert isinstance(turn, TurnView) and turn.status == "completed", turn
    assert 'You said: "What is agentlog?"' in turn.output_text
    assert (await client.turn(session_id, turn.turn_id)).output_text == turn.output_text
    session = await client.session(session_id)
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.metadata.turn_count == 1 and session.metadata.user_metadata == {"team": "a"}
    events = [e async for e in client.events(session_id, limit=2)]  # pages of two
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "session_started" and events[-1].type == "turn_completed"
    # Without wait: accepted, then waited for.
    accepted = await client.send(session_id, "and again")
    assert isinstance(accepted, TurnAccepted) and accepted.idempotency_key
    done = await client.wait_for_turn(session_id, accepted.turn_id, timeout=30)
    assert done.status == "completed" and "turn 2 of our conversation" in done.output_text


async def test_same_idempotency_key_is_the_same_turn(client: AsyncAgentlog, stack: Stack) -> None:
    session_id = sid("idem")
    first = await client.send(session_id, "only once", idempotency_key="k1")
    second = await client.send(session_id, "only once", idempotency_key="k1")
    assert isinstance(first, TurnAccepted) and first.idempotency_key == "k1"
    assert first.turn_id == second.turn_id
    await client.wait_for_turn(session_id, first.turn_id, timeout=30)
    third = await client.send(session_id, "only once", idempotency_key="k1", wait=10)
    assert isinstance(third, TurnView) and third.turn_id == first.turn_id and third.status == "completed"
    with pytest.raises(AgentlogError) as reused:
        await client.send(session_id, "another body", idempotency_key="k1")
    assert reused.value.status == 422 and reused.value.fields == ["Idempotency-Key"]
    assert await stack.sql("SELECT count(*) FROM turns WHERE session_id = %s", session_id) == [(1,)]


async def test_stream_yields_the_turn_in_order_with_deltas_and_resumes(client: AsyncAgentlog) -> None:
    session_id = sid("stream")
    await client.create_session(session_id=session_id)
    seen: list[EventView] = []
    deltas: list[TextDelta] = []
    turn_id = ""
    async with aclosing(client.stream(session_id)) as items:
        async for item in items:
            if isinstance(item, TextDelta):
                deltas.append(item)
                continue
            seen.append(item)
            if item.type == "session_started":  # listening now: nothing of the turn can be missed
                turn_id = (await client.send(session_id, "stream me please")).turn_id
            if item.type == "turn_completed" and item.turn_id == turn_id:
                break
    stored = [e async for e in client.events(session_id)]
    assert [e.seq for e in seen] == [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert [e.type for e in seen] == [e.type for e in stored]
    answer = (await client.turn(session_id, turn_id)).output_text
    assert deltas and {d.turn_id for d in deltas} == {turn_id}
    assert "".join(d.text for d in deltas) == answer
    # Resuming after any event repeats nothing and misses nothing.
    middle = seen[len(seen) // 2].seq
    resumed: list[EventView] = []
    async with aclosing(client.stream(session_id, after=middle)) as items:
        async for item in items:
            if isinstance(item, EventView):
                resumed.append(item)
                if item.seq == seen[-1].seq:
                    break
    assert [e.seq for e in resumed] == [e.seq for e in seen if e.seq > middle]


class CutStream(httpx.AsyncByteStream):
    """A response body that breaks off partway into its third message, like a dropped connection."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = b""
        async for chunk in self.inner:
            sent += chunk
            ends = [i for i in range(len(sent)) if sent.startswith(b"\n\n", i)]
            if len(ends) >= 2:
                yield chunk[: len(chunk) - (len(sent) - (ends[1] + 2 + 20))]
                raise httpx.ReadError("connection reset (test)")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class DroppingTransport(httpx.AsyncBaseTransport):
    """The real transport, except that the first event stream breaks off; records what each
    stream request asked for."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.stream_requests: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/events/stream"):
            return response
        self.stream_requests.append(request.headers)
        if len(self.stream_requests) > 1:
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=CutStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_stream_reconnects_after_a_dropped_connection_from_the_last_id(
    client: AsyncAgentlog, stack: Stack
) -> None:
    session_id = sid("drop")
    turn = await client.send(session_id, "one", wait=30)
    assert isinstance(turn, TurnView)
    stored = [e async for e in client.events(session_id)]
    transport = DroppingTransport()
    got: list[EventView] = []
    async with AsyncAgentlog(stack.api_url or "", token(stack), transport=transport) as flaky:
        async with aclosing(flaky.stream(session_id)) as items:
            async for item in items:
                if isinstance(item, EventView):
                    got.append(item)
                    if item.seq == stored[-1].seq:
                        break
    assert [e.event_id for e in got] == [e.event_id for e in stored]
    assert len(transport.stream_requests) == 2
    assert "last-event-id" not in transport.stream_requests[0]
    assert transport.stream_requests[1]["last-event-id"] == "2"  # two whole messages came before the cut


async def test_sessions_iterates_every_page(client: AsyncAgentlog) -> None:
    prefix = sid("page")
    mine = [f"{prefix}-{i}" for i in range(5)]
    for session_id in mine:
        await client.create_session(session_id=session_id)
    page = await client.sessions_page(limit=2)
    assert len(page.data) == 2 and page.has_more and page.last_id == page.data[-1].id
    listed = [s.id async for s in client.sessions(limit=2)]
    assert len(listed) == len(set(listed)) and len(listed) > 2
    assert [s for s in listed if s in mine] == mine
    idle = [s.id async for s in client.sessions(status="idle", limit=3)]
    assert set(mine) <= set(idle)


async def test_delete_makes_a_session_answer_404(client: AsyncAgentlog) -> None:
    session_id = sid("gone")
    await client.send(session_id, "short-lived", wait=30)
    await client.delete(session_id)

    async def gone() -> bool:
        try:
            await client.session(session_id)
        except AgentlogError as exc:
            return exc.status == 404
        return False

    await wait_until(gone)
    await client.delete(session_id)  # deleting again is still 202


async def test_errors_are_parsed_from_problem_json(client: AsyncAgentlog) -> None:
    with pytest.raises(AgentlogError) as empty:
        await client.send(sid("bad"), "")
    assert empty.value.status == 422 and empty.value.fields == ["content"]
    assert empty.value.title == "Invalid request" and not empty.value.retriable
    with pytest.raises(AgentlogError) as policy:
        await client.create_session(policy="sometimes")
    assert policy.value.status == 422 and "policy" in policy.value.fields
    assert policy.value.problem["status"] == 422
    with pytest.raises(AgentlogError) as missing:
        await client.session("nobody-here")
    assert missing.value.status == 404 and missing.value.title == "Session not found"
    assert "nobody-here" in str(missing.value)
    with pytest.raises(AgentlogError) as no_turn:
        await client.wait_for_turn("nobody-here", "t-0", timeout=0.3)
    assert no_turn.value.status == 404
    async with AsyncAgentlog(f"http://127.0.0.1:{devstack.free_port()}") as nowhere:
        with pytest.raises(ApiUnreachable) as unreachable:
            await nowhere.session("x")
    assert unreachable.value.status == 0 and unreachable.value.retriable


async def test_run_answers_a_prompt(client: AsyncAgentlog) -> None:
    result = await client.run("quick question", timeout_s=30)
    assert result.status == "completed" and 'You said: "quick question"' in result.output_text


async def test_approve_and_deny_tool_calls(client: AsyncAgentlog) -> None:
    for decision in ("approve", "deny"):
        session_id = sid(decision)
        await client.create_session(session_id=session_id, approvals=["Echo"])
        accepted = await client.send(session_id, 'call Echo {"text": "may I"}')

        async def pending(session_id: str = session_id) -> list[dict[str, Any]]:
            return await client.approvals(session_id, status="pending")

        waiting = (await wait_until(pending))[0]
        if decision == "approve":
            await client.approve(session_id, waiting["approval_id"])
        else:
            await client.deny(session_id, waiting["approval_id"], reason="not today")
        turn = await client.wait_for_turn(session_id, accepted.turn_id, timeout=30)
        assert turn.status == "completed" and turn.output_text.startswith("Tool results:")
        if decision == "approve":
            assert "may I" in turn.output_text and "(error)" not in turn.output_text
        else:
            assert "(error)" in turn.output_text
        with pytest.raises(AgentlogError) as twice:  # the first decision holds
            await client.approve(session_id, waiting["approval_id"])
        assert twice.value.status == 409 and twice.value.title == "Approval already closed"


# --- the sync client, the stack file ---------------------------------------------------------


async def test_sync_client_sends_waits_lists_and_streams(stack: Stack) -> None:
    session_id = sid("sync")

    def use() -> tuple[TurnAccepted | TurnView, list[str], list[str]]:
        with Agentlog(stack.api_url or "", token(stack)) as sync:
            turn = sync.send(session_id, "from a thread", wait=30)
            listed = [s.id for s in sync.sessions(limit=2)]
            with closing(sync.stream(session_id)) as items:
                types = []
                for item in items:
                    if isinstance(item, EventView):
                        types.append(item.type)
                        if item.type == "turn_completed":
                            break
        return turn, listed, types

    turn, listed, types = await asyncio.to_thread(use)
    assert isinstance(turn, TurnView) and 'You said: "from a thread"' in turn.output_text
    assert session_id in listed
    assert types[0] == "session_started" and types[-1] == "turn_completed"


async def test_from_stack_reads_the_stack_file_and_the_environment(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    with pytest.raises(NotConfigured, match="AGENTLOG_API_URL"):
        from_stack(path, env={})
    path.write_text(
        json.dumps({"api_url": stack.api_url, "api_token": token(stack), "database_url": "postgresql://db"})
    )
    info = locate(path, env={})
    assert info.api_url == stack.api_url and info.database_url == "postgresql://db"
    async with AsyncAgentlog.from_stack(path, env={}) as from_file:
        assert (await from_file.sessions_page(limit=1)).data is not None
    path.write_text(json.dumps({"api_url": "http://elsewhere:1", "api_token": "secret"}))
    overridden = locate(
        path, env={"AGENTLOG_API_URL": stack.api_url or "", "AGENTLOG_DATABASE_URL": "pg://x"}
    )
    assert overridden.api_url == stack.api_url and overridden.database_url == "pg://x"
    assert overridden.api_token is None  # the file's token is never sent to another api


def test_sse_parser_follows_the_event_stream_rules() -> None:
    parser = SSEParser()
    lines = [": ping", "", "id: 7", "event: turn_started", "data: {", "data: }", "", "event: text_delta"]
    lines += ["data:hi", "", "retry: 10", ""]
    out = [m for m in map(parser.feed, lines) if m is not None]
    assert [(m.event, m.data, m.id) for m in out] == [
        ("turn_started", "{\n}", "7"),
        ("text_delta", "hi", None),
    ]


# --- the CLI ---------------------------------------------------------------------------------


def cli_env(stack: Stack) -> dict[str, str | None]:
    return {
        "AGENTLOG_API_URL": stack.api_url,
        "AGENTLOG_API_TOKEN": token(stack),
        "AGENTLOG_DATABASE_URL": stack.settings.database_url,
        "COLUMNS": "200",
    }


async def cli(
    stack: Stack, tmp_path: Path, *args: str, input: str | None = None, **env: str | None
) -> Result:
    """Run the CLI in a thread, so that this event loop keeps serving the api meanwhile."""
    argv = [*args, "--data-dir", str(tmp_path)]
    return await asyncio.to_thread(
        CliRunner().invoke, app, argv, input=input, env={**cli_env(stack), **env}, catch_exceptions=False
    )


async def test_cli_send_prints_the_answer_or_the_turn(stack: Stack, tmp_path: Path) -> None:
    session_id = sid("cli")
    result = await cli(stack, tmp_path, "send", session_id, "hi from the cli", "--wait", "30")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('You said: "hi from the cli". This is turn 1 of our conversation.')
    result = await cli(stack, tmp_path, "send", session_id, "as json", "--json", "--key", "j1")
    assert result.exit_code == 0, result.output
    turn = TurnView.model_validate_json(result.stdout)
    assert turn.status == "completed" and "turn 2" in turn.output_text
    result = await cli(stack, tmp_path, "send", session_id, "later", "--wait", "0")
    assert result.exit_code == 0 and result.stdout.startswith("accepted: turn ")


async def test_cli_sessions_prints_a_table_or_json(stack: Stack, tmp_path: Path) -> None:
    session_id = sid("list")
    async with AsyncAgentlog(stack.api_url or "", token(stack)) as client:
        await client.send(session_id, "to be listed", wait=30)
    result = await cli(stack, tmp_path, "sessions", "--json", "--limit", "1000")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows[session_id]["turn_count"] == 1 and rows[session_id]["status"] == "idle"
    result = await cli(stack, tmp_path, "sessions", "--limit", "1000")
    assert result.exit_code == 0 and "turns" in result.stdout and session_id in result.stdout
    result = await cli(stack, tmp_path, "sessions", "--limit", "1", "--json")
    assert len(json.loads(result.stdout)) == 1


async def test_cli_chat_prints_the_reply_and_tool_calls(stack: Stack, tmp_path: Path) -> None:
    result = await cli(stack, tmp_path, "chat", input='hello\ncall Echo {"text": "ping"}\n/quit\n')
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("session chat-")
    assert out.count('You said: "hello". This is turn 1 of our conversation.') == 1, out
    assert '→ Echo {"text": "ping"}' in out and "← ping" in out, out
    assert out.count("Tool results: ") == 1, out
    # In the order they happened, though text deltas come another way than stored events.
    assert out.index("Calling Echo.") < out.index("→ Echo") < out.index("← ping") < out.index("Tool results")
    # The same session again (end of input leaves too): only the new turn is shown.
    session_id = out.split()[1]
    result = await cli(stack, tmp_path, "chat", session_id, input="third\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count('You said: "third"') == 1, result.stdout
    assert "hello" not in result.stdout


async def test_cli_chat_commands_are_never_sent(stack: Stack, tmp_path: Path) -> None:
    fork = sid("forked")
    lines = ["hello", 'call Echo {"text": "ping"}', "and now", "/help", "/cost", "/nope", f"/fork {fork}"]
    result = await cli(
        stack, tmp_path, "chat", input="\n".join([*lines, "in the fork", "//slash", "/quit", ""])
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    # The offline model counts turns as the api does: the tool results sent back are no turn.
    assert 'You said: "and now". This is turn 3 of our conversation.' in out, out
    assert "/fork [SESSION]" in out and "/cost" in out  # the help
    assert re.search(r"\$0\.\d{4} for 3 turns; tokens \d+ in, \d+ out", out), out  # never 0E-10
    assert "unknown command /nope" in out and 'You said: "/nope"' not in out
    assert f"as {fork}: the chat goes on there" in out
    assert 'You said: "in the fork". This is turn 4 of our conversation.' in out, out
    assert 'You said: "/slash"' in out  # `//` sends a line that starts with `/`
    async with AsyncAgentlog(stack.api_url or "", token(stack)) as client:
        forked = await client.session(fork)
    assert forked.messages[-1].content[0]["text"].startswith('You said: "/slash"')


async def test_cli_says_where_the_api_is_missing(stack: Stack, tmp_path: Path) -> None:
    unset: dict[str, str | None] = {"AGENTLOG_API_URL": None, "AGENTLOG_DATABASE_URL": None}
    for args in (("send", "s", "x"), ("sessions",), ("chat",), ("sql", "SELECT 1"), ("token", "create", "t")):
        result = await cli(stack, tmp_path, *args, **unset)
        assert result.exit_code == 1, (args, result.output)
        assert "AGENTLOG_API_URL" in result.output or "AGENTLOG_DATABASE_URL" in result.output, args
        assert "agentlog up" in result.output


async def test_cli_token_create_issues_a_tenant_token(stack: Stack, tmp_path: Path) -> None:
    result = await cli(stack, tmp_path, "token", "create", "acme", "--name", "ci")
    assert result.exit_code == 0, result.output
    issued = result.stdout.strip()
    assert issued.startswith("agl_") and "\n" not in issued
    async with (
        AsyncAgentlog(stack.api_url or "", issued) as acme,
        AsyncAgentlog(stack.api_url or "", token(stack)) as other,
    ):
        session_id = sid("acme")
        await acme.create_session(session_id=session_id)
        assert (await acme.session(session_id)).metadata.tenant_id == "acme"
        assert [s.id async for s in acme.sessions()] == [session_id]
        with pytest.raises(AgentlogError) as hidden:
            await other.session(session_id)
        assert hidden.value.status == 404
    async with AsyncAgentlog(stack.api_url or "", "agl_never-issued") as stranger:
        with pytest.raises(AgentlogError) as refused:
            await stranger.sessions_page()
        assert refused.value.status == 401


async def test_cli_sql_prints_the_rows(stack: Stack, tmp_path: Path) -> None:
    session_id = sid("sql")
    async with AsyncAgentlog(stack.api_url or "", token(stack)) as client:
        await client.send(session_id, "count me", wait=30)
        tenant = (await client.session(session_id)).metadata.tenant_id
    query = f"SELECT session_id, turn_count FROM sessions WHERE session_id = '{session_id}'"
    result = await cli(stack, tmp_path, "sql", query, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"session_id": session_id, "turn_count": 1}]
    result = await cli(stack, tmp_path, "sql", query)
    assert result.exit_code == 0 and session_id in result.stdout and "turn_count" in result.stdout
    result = await cli(stack, tmp_path, "sql", query, "--tenant", tenant, "--json")
    assert result.exit_code == 0, result.output
    assert [row["session_id"] for row in json.loads(result.stdout)] == [session_id]
    result = await cli(stack, tmp_path, "sql", query, "--tenant", "someone-else", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    result = await cli(stack, tmp_path, "sql", "DELETE FROM sessions")
    assert result.exit_code == 1 and "only a query is allowed" in result.output
