"""`agentlog bench load` end to end on a small load: the command against a running api (the
offline model), and the driver against Claude's API faked on loopback (known token counts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentlog.fake_anthropic import FakeAnthropic, sized
from agentlog.load import LoadPlan, bench_app, drive
from agentlog.load_report import summarize
from eventstore.events import Usage
from eventstore.models import CLAUDE_DEFAULT
from tests.services import Stack, published_cost, stack_on

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def claude() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(
        latency_s=0.05, default=sized(100, 20, cache_read_tokens=30, cache_write_tokens=40)
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path, claude: FakeAnthropic) -> AsyncIterator[Stack]:
    # One stack for both: agentlog-offline-* models go to the offline model, claude-* to the fake.
    async with stack_on(
        pg_server,
        log_dir,
        offline_model_latency_ms=50,
        anthropic_base_url=claude.base_url,
        anthropic_api_key="test-key",
    ) as stack:
        await stack.start("projector", "reactor", "model")
        await stack.start_api()
        yield stack


async def test_bench_load_reports_json_and_a_png_histogram(stack: Stack, tmp_path: Path) -> None:
    app = typer.Typer()
    app.add_typer(bench_app, name="bench")  # as the CLI registers it
    out, png = tmp_path / "load.json", tmp_path / "latency.png"
    args = ["bench", "load", "--sessions", "5", "--turns", "2", "--api-url", stack.api_url or ""]
    args += ["--output", str(out), "--png", str(png)]
    # The command runs its own event loop; the api answers from this one meanwhile.
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert "turn latency p50 / p95 / p99" in result.output
    summary = json.loads(out.read_text())
    assert summary["sessions"] == 5 and summary["turns_per_session"] == 2
    assert summary["turns"] == summary["completed"] == 10
    assert summary["errors"] == 0, summary["error_samples"]
    latency = summary["latency_ms"]
    assert latency["count"] == 10 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    first = summary["first_event_ms"]
    assert first["count"] == 10 and 0 < first["p50"] <= first["p95"] <= first["p99"]
    assert summary["first_output_ms"]["count"] == 10
    assert summary["tokens"]["input"] > 0 and summary["tokens"]["output"] > 0
    assert Decimal(summary["cost_usd"]) > 0
    assert summary["throughput_turns_per_s"] > 0
    assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 1000


async def test_load_through_the_fake_anthropic_api_counts_its_tokens(
    stack: Stack, claude: FakeAnthropic
) -> None:
    plan = LoadPlan(sessions=3, turns=2, model=CLAUDE_DEFAULT, streams=2, wait_s=30, warmup=False)
    calls = claude.calls
    summary = summarize(await drive(stack.api_url or "", None, plan))
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["turns"] == summary["completed"] == 6
    assert claude.calls - calls == 6  # one model call per turn, each reporting the fixed usage
    assert summary["tokens"] == {"input": 600, "output": 120, "cache_read": 180, "cache_write": 240}
    # Six calls, each at the model's published prices.
    per_call = Usage(
        input_tokens=100, output_tokens=20, cache_read_input_tokens=30, cache_creation_input_tokens=40
    )
    expected = 6 * published_cost(CLAUDE_DEFAULT, per_call)
    assert expected > 0
    assert Decimal(summary["cost_usd"]) == expected
    assert summary["first_event_ms"]["count"] == 4 and summary["first_output_ms"]["count"] == 4
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["p99"]
