"""The load test (`agentlog bench load`): concurrent sessions through the HTTP api, measured.

Each session posts its turns one after another (`?wait=`), all sessions at once. A turn's
latency runs from the POST to the finished turn's answer. Its time to first event runs from the
POST to the first event of that turn on the session's SSE stream (normally the projected
`user_message`); its time to first output, to the first `text_delta` or `assistant_message`.
Tokens and cost are summed from the finished turns' views. `agentlog.load_report` prints and
writes the result; `agentlog.load_stack` starts a stack to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from agentlog.client import SSEParser, locate
from agentlog.load_stack import ModelSetup
from eventstore import ids
from eventstore.models import CLAUDE_DEFAULT, OFFLINE_MODEL

CLAUDE = CLAUDE_DEFAULT  # priced by genai-prices, so cost is counted
OUTPUT_EVENTS = ("text_delta", "assistant_message")
FINISH_EVENTS = ("turn_completed", "turn_failed")


@dataclass(frozen=True)
class Tokens:
    """Token counts, as the api's turn view reports them."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )


@dataclass(frozen=True)
class TurnSample:
    """One measured turn; the stream times are None for sessions not watched over SSE."""

    session_id: str
    turn_id: str
    ok: bool
    latency_s: float
    first_event_s: float | None = None
    first_output_s: float | None = None
    tokens: Tokens = Tokens()
    cost_usd: Decimal | None = Decimal(0)  # None: the model could not be priced
    error: str | None = None


@dataclass(frozen=True)
class LoadPlan:
    """What to run: how many sessions at once, turns each, on which model."""

    sessions: int = 100
    turns: int = 2
    model: str = OFFLINE_MODEL
    streams: int = 20  # sessions watched over SSE (the api's streams share one listener)
    wait_s: float = 120.0
    warmup: bool = True
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass(frozen=True)
class LoadResult:
    """What a run measured."""

    plan: LoadPlan
    wall_s: float
    samples: tuple[TurnSample, ...]
    setup_errors: tuple[str, ...] = ()

    @property
    def errors(self) -> int:
        """Failed turns plus sessions or streams that could not be set up."""
        return sum(not s.ok for s in self.samples) + len(self.setup_errors)


@dataclass
class _Watch:
    """What one session's SSE stream showed, per turn: when its first event, first output and
    finish arrived (perf_counter seconds)."""

    connected: asyncio.Event = field(default_factory=asyncio.Event)
    first: dict[str, float] = field(default_factory=dict)
    output: dict[str, float] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    def see(self, kind: str, data: dict[str, Any]) -> None:
        turn = data.get("turn_id")
        if not turn:
            return
        now = time.perf_counter()
        self.first.setdefault(turn, now)
        if kind in OUTPUT_EVENTS:
            self.output.setdefault(turn, now)
        if kind in FINISH_EVENTS:
            self.finished.add(turn)


async def _watch(http: httpx.AsyncClient, session_id: str, watch: _Watch) -> None:
    parser = SSEParser()
    timeout = httpx.Timeout(30.0, read=None)
    async with http.stream("GET", f"/v1/sessions/{session_id}/events/stream", timeout=timeout) as resp:
        resp.raise_for_status()
        watch.connected.set()
        async for line in resp.aiter_lines():
            message = parser.feed(line)
            if message is not None:
                watch.see(message.event, json.loads(message.data))


def _problem(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    return f"HTTP {resp.status_code}: {body.get('title', '')} {body.get('detail', '')}".strip()


async def _create(http: httpx.AsyncClient, session_id: str, model: str) -> str | None:
    """Create a session; None, or why it failed."""
    try:
        resp = await http.post("/v1/sessions", json={"session_id": session_id, "model": model})
    except httpx.HTTPError as exc:
        return f"creating {session_id}: {type(exc).__name__}: {exc}"
    return None if resp.status_code == 201 else f"creating {session_id}: {_problem(resp)}"


async def _turn(
    http: httpx.AsyncClient, session_id: str, index: int, wait_s: float
) -> tuple[float, TurnSample]:
    """Post one user turn and wait for it; (the POST's perf_counter start, the sample)."""
    key = f"{session_id}-turn-{index}"
    turn_id = ids.turn_id_for(session_id, key)
    start = time.perf_counter()
    try:
        resp = await http.post(
            f"/v1/sessions/{session_id}/messages",
            params={"wait": wait_s},
            headers={"Idempotency-Key": key},
            json={"content": f"Hello from load test turn {index + 1} of {session_id}."},
        )
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {exc}"
        return start, TurnSample(session_id, turn_id, False, time.perf_counter() - start, error=why)
    took = time.perf_counter() - start
    if resp.status_code != 200:
        why = "not finished within ?wait" if resp.status_code == 202 else _problem(resp)
        return start, TurnSample(session_id, turn_id, False, took, error=why)
    try:
        view = resp.json()
        usage = view["usage"]
        tokens = Tokens(*(int(usage[k]) for k in ("input", "output", "cache_read", "cache_write")))
        cost = None if view["cost"] is None else Decimal(view["cost"])
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        return start, TurnSample(session_id, turn_id, False, took, error=f"unreadable turn view: {exc!r}")
    ok = view.get("status") == "completed"
    error = None if ok else f"turn {view.get('status')}: {view.get('error')}"
    return start, TurnSample(session_id, turn_id, ok, took, tokens=tokens, cost_usd=cost, error=error)


async def _session(
    http: httpx.AsyncClient, session_id: str, plan: LoadPlan
) -> list[tuple[float, TurnSample]]:
    # A client (a connection) of its own, as a separate producer has: a hundred sessions
    # sharing one httpx pool spent seconds in the client, and the p95 measured the load's
    # client more than the stack (README, "agentlog beside LangGraph").
    async with httpx.AsyncClient(base_url=http.base_url, headers=http.headers, timeout=http.timeout) as own:
        return [await _turn(own, session_id, i, plan.wait_s) for i in range(plan.turns)]


def _timed(start: float, sample: TurnSample, watch: _Watch | None) -> TurnSample:
    if watch is None:
        return sample
    first, output = watch.first.get(sample.turn_id), watch.output.get(sample.turn_id)
    return replace(
        sample,
        first_event_s=None if first is None else first - start,
        first_output_s=None if output is None else output - start,
    )


async def _settle(watches: dict[str, _Watch], turn_ids: dict[str, list[str]], within: float) -> None:
    """Give the streams a moment to show the finish of every turn they watch."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if all(set(turn_ids[sid]) <= w.finished for sid, w in watches.items()):
            return
        await asyncio.sleep(0.05)


async def _warm_up(http: httpx.AsyncClient, plan: LoadPlan) -> str | None:
    """One turn before the measured ones (a fresh stack's first turn pays for connections and
    partition assignments); None, or why it failed."""
    session_id = f"load-{plan.run_id}-warmup"
    failed = await _create(http, session_id, plan.model)
    if failed is None:
        _, sample = await _turn(http, session_id, 0, min(plan.wait_s, 60))
        failed = None if sample.ok else f"warm-up turn of {session_id}: {sample.error}"
    return None if failed is None else f"{failed}; no load was run (see the stack's logs)"


async def drive(api_url: str, token: str | None, plan: LoadPlan) -> LoadResult:
    """Run the plan against the api at `api_url`; every failure is counted, none is raised."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    size = plan.sessions + plan.streams + 10
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(
        base_url=api_url.rstrip("/"), headers=headers, timeout=plan.wait_s + 30, limits=limits
    ) as http:
        failed = await _warm_up(http, plan) if plan.warmup else None
        if failed is not None:  # a stack that cannot run one turn would only time out N of them
            return LoadResult(plan, 0.0, (), (failed,))
        sids = [f"load-{plan.run_id}-{i:04d}" for i in range(plan.sessions)]
        created = await asyncio.gather(*(_create(http, sid, plan.model) for sid in sids))
        setup_errors = [e for e in created if e is not None]
        live = [sid for sid, e in zip(sids, created, strict=True) if e is None]
        watches = {sid: _Watch() for sid in live[: plan.streams]}
        tasks = {sid: asyncio.create_task(_watch(http, sid, w)) for sid, w in watches.items()}
        try:
            await _connected(watches, tasks, setup_errors)
            t0 = time.perf_counter()
            runs = await asyncio.gather(*(_session(http, sid, plan) for sid in live))
            wall = time.perf_counter() - t0
            ran = dict(zip(live, runs, strict=True))
            await _settle(watches, {sid: [s.turn_id for _, s in ran[sid]] for sid in watches}, 5.0)
        finally:
            for task in tasks.values():
                task.cancel()
            ended = await asyncio.gather(*tasks.values(), return_exceptions=True)
    # A stream that ended with an error (not our cancel) measured less than it should have.
    setup_errors += [
        f"stream of {sid} failed: {e!r}"
        for sid, e in zip(tasks, ended, strict=True)
        if isinstance(e, Exception)
    ]
    samples = [_timed(start, s, watches.get(sid)) for sid in live for start, s in ran[sid]]
    return LoadResult(plan, wall, tuple(samples), tuple(setup_errors))


async def _connected(
    watches: dict[str, _Watch], tasks: dict[str, asyncio.Task[None]], setup_errors: list[str]
) -> None:
    """Wait for every stream to be open; a stream that fails is an error and is not watched."""
    for sid in list(watches):
        waiter = asyncio.create_task(watches[sid].connected.wait())
        await asyncio.wait({waiter, tasks[sid]}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not watches[sid].connected.is_set():
            task = tasks.pop(sid)
            task.cancel()
            reason = repr(task.exception()) if task.done() and not task.cancelled() else "timed out"
            setup_errors.append(f"stream of {sid}: {reason}")
            del watches[sid]


def _config(plan: LoadPlan, setup: ModelSetup, partitions: int, api_url: str | None) -> dict[str, Any]:
    """What the summary records of how the run was set up."""
    config: dict[str, Any] = {"model": setup.kind, "run_id": plan.run_id, "own_stack": api_url is None}
    if api_url is not None:
        return {**config, "api_url": api_url}
    config.update(partitions=partitions, latency_ms=setup.latency_ms)
    if setup.kind == ModelChoice.fake_anthropic:
        config["usage_per_call"] = {
            "input": setup.input_tokens,
            "output": setup.output_tokens,
            "cache_read": setup.cache_read_tokens,
            "cache_write": setup.cache_write_tokens,
        }
    return config


class ModelChoice(StrEnum):
    """What answers the load: the built-in offline model, or Claude's API faked on loopback."""

    offline = "offline"
    fake_anthropic = "fake-anthropic"


bench_app = typer.Typer(help="benchmarks through the HTTP api.", no_args_is_help=True)


@bench_app.command("load")
def bench_load_command(
    sessions: Annotated[int, typer.Option(min=1, help="sessions at once")] = 100,
    turns: Annotated[int, typer.Option(min=1, help="turns per session, one after another")] = 2,
    model: Annotated[ModelChoice, typer.Option(help="what answers")] = ModelChoice.offline,
    latency_ms: Annotated[int, typer.Option(min=0, help="model time per call (own stack)")] = 1000,
    input_tokens: Annotated[int, typer.Option(min=0, help="fake-anthropic: usage per call")] = 1000,
    output_tokens: Annotated[int, typer.Option(min=0)] = 200,
    cache_read_tokens: Annotated[int, typer.Option(min=0)] = 0,
    cache_write_tokens: Annotated[int, typer.Option(min=0)] = 0,
    claude_model: Annotated[str, typer.Option(help="model name sessions ask fake-anthropic for")] = CLAUDE,
    streams: Annotated[int, typer.Option(min=0, help="sessions watched over SSE (first-event times)")] = 20,
    wait_s: Annotated[float, typer.Option(min=1, max=300, help="?wait= of each turn")] = 120,
    partitions: Annotated[int, typer.Option(min=1, help="partitions (own stack)")] = 8,
    api_url: Annotated[str | None, typer.Option(help="load a running stack's api instead")] = None,
    token: Annotated[str | None, typer.Option(help="its bearer token")] = None,
    stack: Annotated[Path | None, typer.Option(help="load the stack this stack.json names")] = None,
    output: Annotated[Path | None, typer.Option(help="write the summary as JSON here")] = None,
    png: Annotated[Path | None, typer.Option(help="write a histogram of turn latencies here")] = None,
) -> None:
    """Drive concurrent sessions through the api; print throughput, latency percentiles, time to
    first event, tokens, cost and errors. Starts (and stops) a stack of its own unless told one."""
    from rich.console import Console

    from agentlog import load_report
    from agentlog.load_stack import Target, own_stack

    console = Console()
    name = OFFLINE_MODEL if model is ModelChoice.offline else claude_model
    plan = LoadPlan(sessions=sessions, turns=turns, model=name, streams=min(streams, sessions), wait_s=wait_s)
    setup = ModelSetup(
        model.value, latency_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
    )
    if stack is not None and api_url is None:
        found = locate(stack, env={})
        api_url, token = found.api_url, token or found.api_token
        if api_url is None:
            raise typer.BadParameter(f"{stack} names no api", param_hint="--stack")
    config = _config(plan, setup, partitions, api_url)
    with contextlib.ExitStack() as cleanup:
        if api_url is None:
            console.print(f"starting a stack ({model.value}, {latency_ms} ms per model call)…")
            target = cleanup.enter_context(own_stack(setup, partitions))
        else:
            target = Target(api_url, token)
        console.print(f"{sessions} sessions × {turns} turns against {target.api_url}…")
        result = asyncio.run(drive(target.api_url, target.token, plan))
    summary = load_report.summarize(result, config)
    console.print(load_report.table(summary))
    for line in summary["error_samples"][:5]:
        console.print(f"[red]error:[/] {line}")
    if output is not None:
        load_report.write_json(summary, output)
        console.print(f"summary written to {output}")
    if png is not None and load_report.write_png(summary, png, console):
        console.print(f"histogram written to {png}")
    raise typer.Exit(1 if summary["errors"] else 0)
