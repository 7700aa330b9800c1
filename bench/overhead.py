"""The runtime's own time per agent step over the model's: the last part of bench.parts.

One-tool turns one after another through the api (two model steps and one Echo call each),
the offline model answering after a fixed latency L: a turn's time less steps x L, per step,
once as decided in the log (the turn_completed event) and once as visible in Postgres. The
events' producer times split it into hops, each charged to the worker that appended the
later event, and the projection's lag.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict

import httpx

from bench.measure import Row, pct
from eventstore import store
from tests.services import Stack

# Who appends each event type of a tool turn; a hop is charged to the later event's author.
AUTHOR = {
    "user_message": "api",
    "turn_started": "reactor",
    "model_requested": "reactor",
    "tool_requested": "reactor",
    "turn_completed": "reactor",
    "turn_failed": "reactor",
    "assistant_message": "model worker",
    "tool_result": "tool worker",
}


async def _turn(
    client: httpx.AsyncClient, conn: store.AsyncConn, sid: str, latency_s: float, hops: dict[str, list[float]]
) -> tuple[float, float]:
    """One tool turn: its overhead per step in the log and as visible in Postgres (seconds)."""
    content = f"call Echo {json.dumps({'text': f'result of {sid}'})}"
    t0 = time.time()
    r = await client.post(f"/v1/sessions/{sid}/messages", json={"content": content})
    if r.status_code != 202:
        raise RuntimeError(f"post answered {r.status_code}: {r.text[:300]}")
    turn_id = r.json()["turn_id"]
    while True:
        cur = await conn.execute("SELECT status, steps FROM turns WHERE turn_id = %s", (turn_id,))
        row = await cur.fetchone()
        if row is not None and row[0] in ("completed", "failed"):
            break
        await asyncio.sleep(0.005)
    visible = time.time()
    status, steps = row
    if status != "completed" or steps < 1:
        raise RuntimeError(f"turn of {sid} ended {status} after {steps} steps")
    cur = await conn.execute(
        "SELECT type, occurred_at FROM events WHERE turn_id = %s ORDER BY seq", (turn_id,)
    )
    events = [(kind, at.timestamp()) for kind, at in await cur.fetchall()]
    for (before, t_before), (kind, t_at) in itertools.pairwise(events):
        author = AUTHOR.get(kind, kind)
        if author != AUTHOR.get(before, before):
            hops[author].append(t_at - t_before - (latency_s if author == "model worker" else 0))
    completed = events[-1][1]
    hops["projection lag"].append(visible - completed)
    hops["api (post → user_message made)"].append(events[0][1] - t0)
    model_time = steps * latency_s
    return (completed - t0 - model_time) / steps, (visible - t0 - model_time) / steps


async def _series(stack: Stack, url: str, latency_ms: int, turns: int) -> list[Row]:
    latency_s = latency_ms / 1000
    hops: dict[str, list[float]] = defaultdict(list)
    logged: list[float] = []
    visible: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        await store.connect(stack.settings.database_url) as conn,
    ):
        await _turn(client, conn, f"warm{latency_ms}", latency_s, defaultdict(list))
        for i in range(turns):
            in_log, seen = await _turn(client, conn, f"o{latency_ms}-{i}", latency_s, hops)
            logged.append(in_log)
            visible.append(seen)
    part = f"step overhead (L={latency_ms} ms)"
    notes = f"{turns} tool turns one by one, 2 model steps + 1 Echo each"
    rows = [
        Row(part, "per step, decided in the log p50", pct(logged, 0.5) * 1000, "ms", notes),
        Row(part, "per step, decided in the log p95", pct(logged, 0.95) * 1000, "ms"),
        Row(part, "per step, visible in Postgres p50", pct(visible, 0.5) * 1000, "ms", "what ?wait sees"),
        Row(part, "per step, visible in Postgres p95", pct(visible, 0.95) * 1000, "ms"),
    ]
    for name, samples in hops.items():
        per_turn = len(samples) // max(1, turns)
        rows.append(
            Row(
                part,
                f"hop: {name} p50",
                pct(samples, 0.5) * 1000,
                "ms",
                f"{per_turn} per turn" + (", less L" if name == "model worker" else ""),
            )
        )
    return rows


async def step_overhead(stack: Stack, latencies_ms: list[int], turns: int) -> list[Row]:
    """Rows for each model latency (the model worker restarted with it); every worker in this process."""
    rows: list[Row] = []
    url = await stack.start_api()
    await stack.start("projector", "reactor", "tools")
    for latency_ms in latencies_ms:
        await stack.start("model", offline_model_latency_ms=latency_ms)
        rows += await _series(stack, url, latency_ms, turns)
        await stack.stop_role("model")
    return rows
