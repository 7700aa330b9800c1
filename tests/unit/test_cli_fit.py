"""The CLI fits an 80-column terminal and speaks one way: money as `$0.0012` (never `0E-10`),
tables that keep ids whole, help without `<bool>`, `--version`, `logs`, and one line (no
traceback) when the database does not answer."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from agentlog import fmt, top
from agentlog.cli import command, main
from agentlog.cli.chat import sessions_table
from agentlog.cli.logs import grown, tail
from api.models import SessionSummary

LONG_ID = "a-very-long-session-id-that-goes-on-and-on-0123456789"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0E-10"), "$0"),
        ("0.00123456", "$0.0012"),
        (12.5, "$12.50"),
        (Decimal("1234.5"), "$1,234.50"),
        (1e-7, "<$0.0001"),
        (None, "unknown"),
    ],
)
def test_money(value: Decimal | float | str | None, shown: str) -> None:
    assert fmt.money(value) == shown


def test_counts_and_times() -> None:
    assert [fmt.count(v) for v in (950, 12_345, 4_500_000)] == ["950", "12.3k", "4.5M"]
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    assert fmt.when("2026-12-05T10:01:02.5+00:00", now) == "10:01:02"
    assert fmt.when("2026-11-05T10:01:02+00:00", now) == "11-05 10:01"


def _rendered(table: Table) -> list[str]:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def _fits(lines: list[str]) -> None:
    assert lines and all(len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert "0E-" not in text and "…" not in text, text


def test_sessions_fit_80_columns_with_their_ids_whole() -> None:
    found = [
        SessionSummary(
            id=LONG_ID,
            status="running",
            model="claude-sonnet-5-5",
            turn_count=3,
            cost_usd="0E-10",
            started_at=None,
            last_activity_at="2026-11-05T10:01:02+00:00",
        ),
        SessionSummary(
            id="s2",
            status="idle",
            model=None,
            turn_count=0,
            cost_usd=None,
            started_at=None,
            last_activity_at=None,
        ),
    ]
    lines = _rendered(sessions_table(found))
    _fits(lines)
    assert LONG_ID in "".join(line.split(" ")[0] for line in lines)  # folded, never cut
    assert "sonnet-5-5" in lines[2] and "$0" in lines[2] and "unknown" in lines[-1]


def test_top_fits_80_columns() -> None:
    rows = [
        top.Stats(
            "model-host-0123456789ab-54321",
            "model",
            work=12345,
            errors=30,
            duration_sum=50,
            duration_count=12345,
            tokens_in=1234567,
            tokens_out=45678,
            cost_usd=1e-10,
            lag=3,
            dead_letters=2,
            flags=["error rate 12% > 3%"],
        ),
        top.Stats("reactor-host-0123456789ab-999", "reactor", work=500, cost_usd=12.5),
        top.Stats("subagents-host-0123456789ab-1000", "subagents", up=False),
    ]
    snap = top.Snapshot(rows, top.fleet(rows), {r.role: top.fleet([r], r.role) for r in rows})
    lines = _rendered(top.table(snap))
    _fits(lines)
    text = "\n".join(lines)
    assert "1.2M/45.7k" in text and "<$0.0001" in text and "$12.50" in text
    assert "2 dead; error" in text and "rate 12% > 3%" in text  # the flags wrap, never cut


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        command()(args=list(args), prog_name="agentlog")
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out, out.err


def test_one_help_style(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    root = command()
    paths = [[name] for name in root.commands] + [["token", n] for n in root.commands["token"].commands]
    for path in [[], *paths]:
        code, out, _ = _run(capsys, *path, "--help")
        assert code == 0 and "Usage: agentlog" in out, path
        for typed in ("<bool>", "<str>", "<int", "<float", "<path>"):
            assert typed not in out, (path, out)
    _, out, _ = _run(capsys, "top", "--help")
    assert "--interval        INTERVAL" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("agentlog ") and len(out.split()) == 2


def test_logs_of_one_role_or_all(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "api.log").write_text("".join(f"api {n}\n" for n in range(30)))
    (logs / "model-worker.log").write_text("one\ntwo\n")
    code, out, _ = _run(capsys, "logs", "--data-dir", str(tmp_path))
    assert code == 0
    assert out.splitlines()[0] == "api          | api 10" and out.splitlines()[-1] == "model-worker | two"
    code, out, _ = _run(capsys, "logs", "model", "-n", "1", "--data-dir", str(tmp_path))
    assert (code, out) == (0, "two\n")
    code, _, err = _run(capsys, "logs", "nope", "--data-dir", str(tmp_path))
    assert code == 1 and "there are: api, model-worker" in err


def test_following_reads_only_whole_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("a\nb\n")
    text, end = tail(path, 1)
    assert text == "b\n"
    with path.open("a") as f:
        f.write("c\nhalf")
    text, end = grown(path, end)
    assert text == "c\n"
    path.write_text("new\n")  # truncated and written again
    assert grown(path, end)[0] == "new\n"


def test_a_database_that_does_not_answer_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack = {"database_url": "postgresql://postgres@127.0.0.1:1/postgres", "kafka_bootstrap": "127.0.0.1:1"}
    (tmp_path / "stack.json").write_text(json.dumps(stack))
    monkeypatch.delenv("AGENTLOG_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "argv", ["agentlog", "migrate", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("agentlog: the database does not answer: ") and err.count("\n") == 1, err
    assert "port 1" in err  # the stack's database, found through stack.json
