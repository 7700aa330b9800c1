"""The web console (/ui) in a real browser: Playwright drives Debian's chromium (headless)
against a whole stack, the way a person uses it: the token from the URL fragment, turns
posted from the page and from outside appearing live, a pending tool call approved from the
inbox and its turn finishing, a sub-agent's child session, fork and delete, the fleet, a
reconnect that resumes where it left, model text shown as text, and no serious
accessibility violation (axe-core). Screenshots are saved under the test run's temporary
directory (the path is printed).

Without a chromium (`.ci/run` installs Debian's), the browser tests skip, saying so; the
api routes the console reads are tested here too, browser or not.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright, expect

from eventstore.models import CLAUDE_DEFAULT, OFFLINE_MODEL
from tests.fakes import anthropic as fake
from tests.services import Stack, stack_on, wait_until

TOKEN = "tok-console-default"
OTHER = "tok-console-other"
AXE = Path(__file__).parent / "axe" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = '<img src=x onerror="window.__xss = 1">'
SECONDS = 15_000  # ms, Playwright's unit


@pytest.fixture(scope="module")
def claude() -> Iterator[fake.FakeAnthropic]:
    with fake.FakeAnthropic() as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path, claude: fake.FakeAnthropic) -> AsyncIterator[Stack]:
    async with stack_on(
        pg_server,
        log_dir,
        auth_required=True,
        api_tokens=f"{TOKEN}:default,{OTHER}:other",
        heartbeat_s=0.5,
        default_model=OFFLINE_MODEL,  # Claude (the fake) only for sessions that name it
        anthropic_api_key="test-key",
        anthropic_base_url=claude.base_url,
    ) as stack:
        await stack.start_everything()
        yield stack


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    async with async_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's own sandbox cannot start.
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest_asyncio.fixture
async def page(browser: Browser, stack: Stack) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def logged(msg: ConsoleMessage) -> None:
        # Not the browser's own log of an answer that was not 2xx (a session not projected
        # yet is a 404 the page handles) or of requests it could not send while offline.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(f"console {msg.type}: {msg.text}")

    opened.on("console", logged)
    await opened.goto(f"{stack.api_url}/ui/#token={TOKEN}")
    yield opened
    await context.close()
    assert errors == [], errors


def api(stack: Stack, token: str = TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url or "", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


async def post(stack: Stack, session: str, content: str, **settings: Any) -> dict[str, Any]:
    async with api(stack) as client:
        r = await client.post(f"/v1/sessions/{session}/messages", json={"content": content, **settings})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is."""
    # Evaluated through the DevTools protocol, which the page's CSP does not govern.
    await page.evaluate(AXE.read_text())
    result = await page.evaluate("async () => JSON.stringify((await axe.run(document)).violations)")
    found = json.loads(result)
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


async def snap(page: Page, shots: Path, name: str) -> None:
    await page.screenshot(path=shots / f"{name}.png", full_page=True)


async def test_a_tool_turn_streams_in_live_and_an_approved_call_finishes_its_turn(
    page: Page, stack: Stack, shots: Path
) -> None:
    # The token came in the fragment and left the address bar.
    await expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    assert "token" not in page.url
    async with api(stack) as client:
        made = await client.post("/v1/sessions", json={"session_id": "demo", "approvals": ["Echo"]})
        assert made.status_code == 201, made.text
    await page.goto(f"{stack.api_url}/ui/#/sessions/demo")
    await expect(page.locator("#live-state")).to_have_text("live")

    # A tool turn sent from the page: a read and a sub-agent, in parallel.
    task = json.dumps({"description": "say hi", "prompt": "Say hi."})
    await page.get_by_role("textbox", name="Message").fill(f'call Glob {{"pattern": "*"}}\ncall Task {task}')
    await page.get_by_role("button", name="Send").click()
    turn = page.locator("section[aria-label='Turn 1']")
    await expect(turn.locator(".turn-foot .badge")).to_have_text("completed", timeout=SECONDS)
    glob = turn.locator(".tool", has_text="Glob")
    await expect(glob.locator(".tool-head .badge").first).to_have_text("ok")
    await expect(glob.locator(".cls")).to_have_text("read/fetch")
    await expect(turn.locator(".turn-cost")).to_have_text(re.compile(r"^\$0\.0\d+$"), timeout=SECONDS)
    assert await turn.locator(".turn-latency").inner_text() != "–"
    child = turn.locator(".tool", has_text="Task").locator(".children a")
    await expect(child).to_have_count(1)
    await expect(turn.locator(".tool", has_text="Task").locator(".cls")).to_have_text("agent")
    await snap(page, shots, "1-tool-turn")

    # A turn posted from outside appears live; its call waits for a human.
    await post(stack, "demo", 'call Echo {"text": "approved by a person"}')
    second = page.locator("section[aria-label='Turn 2']")
    await expect(second.locator(".tool .badge").first).to_have_text("waiting for approval", timeout=SECONDS)
    await snap(page, shots, "2-waiting-for-approval")

    # The inbox lists it; approving it finishes the turn.
    await page.get_by_role("link", name="Approvals").click()
    item = page.locator("article.approval-item", has_text="demo")
    await expect(item).to_have_count(1, timeout=SECONDS)
    await expect(item.locator("pre")).to_contain_text("approved by a person")
    await snap(page, shots, "3-approvals-inbox")
    assert await serious_violations(page) == []
    await item.get_by_role("button", name="Approve Echo").click()
    await expect(page.get_by_text("Nothing waits for approval.")).to_be_visible(timeout=SECONDS)

    await page.goto(f"{stack.api_url}/ui/#/sessions/demo")
    await expect(second.locator(".turn-foot .badge")).to_have_text("completed", timeout=SECONDS)
    await expect(second.locator(".tool .result pre")).to_have_text("approved by a person")
    await expect(second.locator(".tool .approval")).to_have_text("Approved")
    await expect(second.locator(".tool", has_text="Echo").locator(".cls")).to_have_text("read/fetch")
    await snap(page, shots, "4-approved-turn-finished")
    assert await serious_violations(page) == []

    # The sub-agent is a link to its child session, which links back.
    await child.click()
    await expect(page.get_by_text("Sub-agent of")).to_be_visible()
    await expect(page.locator("section[aria-label='Turn 1'] .turn-foot .badge")).to_have_text("completed")


async def test_the_stream_resumes_after_a_reconnect_without_gaps_or_repeats(
    page: Page, stack: Stack, shots: Path
) -> None:
    await post(stack, "resume", "first")
    resumed: list[str | None] = []

    def seen(request: Request) -> None:
        if request.url.endswith("/v1/sessions/resume/events/stream"):
            resumed.append(request.headers.get("last-event-id"))

    page.on("request", seen)
    await page.goto(f"{stack.api_url}/ui/#/sessions/resume")
    await expect(page.locator("section[aria-label='Turn 1'] .turn-foot .badge")).to_have_text(
        "completed", timeout=SECONDS
    )
    await page.context.set_offline(True)
    await expect(page.locator("#live-state")).to_have_text("reconnecting", timeout=SECONDS)
    await post(stack, "resume", "second, while the page was offline")

    async def finished() -> bool:
        rows = await stack.sql(
            "SELECT count(*) FROM turns WHERE session_id = 'resume' AND status = 'completed'"
        )
        return bool(rows[0][0] == 2)

    await wait_until(finished)
    await page.context.set_offline(False)
    await expect(page.locator("section[aria-label='Turn 2'] .turn-foot .badge")).to_have_text(
        "completed", timeout=SECONDS
    )
    await expect(page.locator("#live-state")).to_have_text("live")
    # It asked from where it left (the first request had nothing to resume from)...
    assert resumed[0] is None and resumed[-1] is not None and int(resumed[-1]) > 0, resumed
    # ...so each message is shown once.
    await expect(page.locator("section.turn")).to_have_count(2)
    await expect(page.locator(".msg.user")).to_have_count(2)
    await snap(page, shots, "5-resumed")


async def test_model_and_tool_text_is_shown_as_text_never_as_markup(
    page: Page, stack: Stack, shots: Path
) -> None:
    await post(stack, "xss", f"{XSS}\ncall Echo {json.dumps({'text': XSS})}")
    await page.goto(f"{stack.api_url}/ui/#/sessions/xss")
    turn = page.locator("section[aria-label='Turn 1']")
    await expect(turn.locator(".turn-foot .badge")).to_have_text("completed", timeout=SECONDS)
    await expect(turn.locator(".msg.user pre")).to_contain_text(XSS)
    await expect(turn.locator(".tool .result pre")).to_have_text(XSS)
    await expect(turn.locator(".msg.assistant pre.text").last).to_contain_text(XSS)  # the model's
    # Shown as text: no element was made of it (the CSP would stop the handler anyway; this
    # checks that the markup never became markup).
    assert await page.locator("#transcript img").count() == 0
    assert await page.evaluate("window.__xss") is None
    await snap(page, shots, "6-markup-as-text")
    async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
        r = await client.get("/ui/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_thinking_is_collapsed_until_opened(
    page: Page, stack: Stack, claude: fake.FakeAnthropic
) -> None:
    claude.script(fake.thinking("First, <b>weigh</b> the options.", fake.text("Option B.")))
    await post(stack, "thinks", "Which option?", model=CLAUDE_DEFAULT)
    await page.goto(f"{stack.api_url}/ui/#/sessions/thinks")
    assistant = page.locator("section[aria-label='Turn 1'] .msg.assistant")
    await expect(assistant.locator("pre.text")).to_have_text("Option B.", timeout=SECONDS)
    thinking = assistant.locator("details.thinking")
    await expect(thinking.locator("pre")).to_be_hidden()
    await thinking.locator("summary").click()
    await expect(thinking.locator("pre")).to_have_text("First, <b>weigh</b> the options.")
    await expect(assistant.locator(".call-meta")).to_contain_text(CLAUDE_DEFAULT)


async def test_fork_at_a_turn_then_delete_the_fork(page: Page, stack: Stack, shots: Path) -> None:
    await post(stack, "source", "one")
    await page.goto(f"{stack.api_url}/ui/#/sessions/source")
    first = page.locator("section[aria-label='Turn 1']")
    await expect(first.get_by_role("button", name="Fork here")).to_be_visible(timeout=SECONDS)
    await first.get_by_role("button", name="Fork here").click()
    await expect(page.get_by_text("Forked from")).to_be_visible(timeout=SECONDS)
    fork_id = page.url.rsplit("/", 1)[1]
    assert fork_id.startswith("source.fork-")
    await expect(page.locator(".turn.history .msg.user pre")).to_have_text("one")
    await snap(page, shots, "7-fork")

    await page.get_by_role("button", name="Delete session").click()
    await page.get_by_role("button", name="Yes, delete it").click()
    await expect(page.get_by_role("heading", name="Sessions")).to_be_visible()

    async def gone() -> bool:
        async with api(stack) as client:
            return (await client.get(f"/v1/sessions/{fork_id}")).status_code == 404

    await wait_until(gone)


async def test_sessions_filter_and_the_fleet_flags_nothing_in_a_healthy_stack(
    page: Page, stack: Stack, shots: Path
) -> None:
    await post(stack, "listed", "hello")

    async def projected() -> bool:
        async with api(stack) as client:
            return (await client.get("/v1/sessions/listed")).status_code == 200

    await wait_until(projected)
    await expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name="listed")).to_be_visible(timeout=SECONDS)
    await page.get_by_label("Status").select_option("expired")
    await expect(page.get_by_text("No sessions match.")).to_be_visible()
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Model").fill("no-such-model")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("No sessions match.")).to_be_visible()
    await page.get_by_label("Model").fill("")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name="listed")).to_be_visible()
    await snap(page, shots, "8-sessions")

    # A session started from the page: its stream begins once the first message made it.
    await page.get_by_label("Open or start a session by id").fill("started-here")
    await page.get_by_role("button", name="Open").click()
    await expect(page.locator("#live-state")).to_have_text("no session yet")
    await page.get_by_role("textbox", name="Message").fill("hello from the page")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("section[aria-label='Turn 1'] .turn-foot .badge")).to_have_text(
        "completed", timeout=SECONDS
    )
    await expect(page.locator("#live-state")).to_have_text("live")
    await page.get_by_role("link", name="← Sessions").click()
    assert await serious_violations(page) == []

    await page.get_by_role("link", name="Fleet").click()
    for role in ("api", "reactor", "projector", "model", "tools"):
        await expect(page.locator("tbody tr.instance td:nth-child(2)", has_text=role).first).to_be_visible(
            timeout=SECONDS
        )
    await expect(page.get_by_text("No outliers.")).to_be_visible()
    await snap(page, shots, "9-fleet")
    assert await serious_violations(page) == []


async def test_without_a_token_the_console_asks_for_one(browser: Browser, stack: Stack) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{stack.api_url}/ui")  # redirected to /ui/
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("Api token").fill("not-a-token")
        await page.get_by_role("button", name="Use this token").click()
        await expect(page.get_by_text("That token was refused.")).to_be_visible()
        await page.get_by_label("Api token").fill(TOKEN)
        await page.get_by_role("button", name="Use this token").click()
        await expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
        assert await serious_violations(page) == []
    finally:
        await context.close()


async def test_the_routes_the_console_reads(stack: Stack) -> None:
    """What the console adds to the api, browser or not: tokens and a model filter on the
    session list, a session's turns and tool calls, the tenant's approvals, the fleet for
    operator tenants only."""
    sent = await post(stack, "routes", 'call Echo {"text": "x"}', approvals=["Echo"])
    async with api(stack) as client, api(stack, OTHER) as other:

        async def waiting() -> list[dict[str, Any]]:
            page = (await client.get("/v1/approvals", params={"status": "pending"})).json()["data"]
            return [a for a in page if a["session_id"] == "routes"]

        [pending] = await wait_until(waiting)
        assert pending["name"] == "Echo" and pending["input"] == {"text": "x"}
        assert (await other.get("/v1/approvals")).json() == {"data": []}
        calls = (await client.get("/v1/sessions/routes/tool_calls")).json()["data"]
        assert [(c["name"], c["status"], c["idempotency_class"], c["approval"]) for c in calls] == [
            (
                "Echo",
                "waiting_for_approval",
                None,
                {"approval_id": pending["approval_id"], "status": "pending"},
            )
        ]
        decided = await client.post(
            f"/v1/sessions/routes/approvals/{pending['approval_id']}", json={"decision": "approve"}
        )
        assert decided.status_code == 202

        async def done() -> list[dict[str, Any]]:
            turns = (await client.get("/v1/sessions/routes/turns")).json()["data"]
            return [t for t in turns if t["status"] == "completed"]

        [turn] = await wait_until(done)
        assert turn["turn_id"] == sent["turn_id"] and turn["steps"] == 2
        assert turn["duration_ms"] > 0 and turn["cost"] is not None and turn["usage"]["output"] > 0
        [call] = (await client.get("/v1/sessions/routes/tool_calls")).json()["data"]
        assert call["status"] == "ok" and call["idempotency_class"] == "read_or_fetch"
        assert call["duration_ms"] is not None and call["result"] == "x"
        assert (await other.get("/v1/sessions/routes/turns")).status_code == 404

        # A denied call never ran: no class, the denial as its (error) result.
        await post(stack, "routes", 'call Echo {"text": "no"}')
        [second] = await wait_until(waiting)
        r = await client.post(
            f"/v1/sessions/routes/approvals/{second['approval_id']}",
            json={"decision": "deny", "reason": "not now"},
        )
        assert r.status_code == 202

        async def denied() -> list[dict[str, Any]]:
            calls = (await client.get("/v1/sessions/routes/tool_calls")).json()["data"]
            return [c for c in calls if c["approval"] and c["approval"]["status"] == "denied" and c["result"]]

        [refused] = await wait_until(denied)
        assert refused["status"] == "error" and refused["idempotency_class"] is None
        assert "not now" in json.dumps(refused["result"])
        assert (await other.get("/v1/sessions/routes/tool_calls")).status_code == 404

        listed = (await client.get("/v1/sessions", params={"model": OFFLINE_MODEL})).json()["data"]
        model = next(s for s in listed if s["id"] == "routes")
        assert model["total_tokens"]["output"] > 0
        assert (await client.get("/v1/sessions", params={"model": "nope"})).json()["data"] == []

        forbidden = await other.get("/v1/fleet")
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"].startswith("application/problem+json")
        fleet = (await client.get("/v1/fleet")).json()
        assert {"api", "reactor", "projector", "model", "tools"} <= {i["role"] for i in fleet["instances"]}
        assert fleet["outliers"] == [] and fleet["fleet"]["work"] > 0
        schema = (await client.get("/openapi.json")).json()
        for path in ("/v1/fleet", "/v1/approvals", "/v1/sessions/{session_id}/turns"):
            assert "get" in schema["paths"][path], path
        assert "403" in schema["paths"]["/v1/fleet"]["get"]["responses"]
