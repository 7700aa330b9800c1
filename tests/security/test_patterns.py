"""The model's patterns cannot stall the executor: Grep and Glob run them on RE2 (linear
time), cap the line they search, and refuse what RE2 cannot run with a reason the model reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from eventstore.settings import Settings
from processors.tools import patterns
from processors.tools.registry import ToolContext
from processors.tools.search import Glob, Grep

CATASTROPHIC = "(a+)+$"  # on Python's re: 2**40 steps over forty a's and a "!"


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    ws = tmp_path / "ws"
    (ws / "src" / "deep").mkdir(parents=True)
    (ws / "evil.txt").write_text("a" * 40 + "!\n" + "a" * 40 + "\n")
    (ws / "src" / "a.py").write_text("x = 1\n")
    (ws / "src" / "deep" / "b.py").write_text("y = 2\n")
    (ws / "src" / "deep" / "c.md").write_text("z\n")
    return ToolContext(session_id="s", workspace=ws, settings=Settings())


async def test_a_catastrophic_pattern_finishes_and_is_right(ctx: ToolContext) -> None:
    out = await Grep().run({"pattern": CATASTROPHIC}, ctx)
    assert not out.is_error and out.content == "evil.txt:2:" + "a" * 40


async def test_a_line_is_searched_up_to_the_cap_and_the_model_is_told(ctx: ToolContext) -> None:
    tail = "needle"
    (ctx.workspace / "long.txt").write_text("x" * patterns.MAX_LINE_CHARS + tail + "\nneedle\n")
    out = await Grep().run({"pattern": tail, "path": "long.txt"}, ctx)
    assert not out.is_error
    lines = str(out.content).splitlines()
    assert lines[0] == "long.txt:2:needle"  # line 1 holds it past the cap only
    assert "1 line longer than" in lines[-1] and "first part only" in lines[-1]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "backreferences"),
        (r"foo(?=bar)", "lookaround"),
        (r"(?<!x)y", "lookaround"),
        (r"a{1001}", "repetition"),
        ("(", "missing"),
        ("x" * (patterns.MAX_PATTERN_CHARS + 1), "over the limit"),
        ("", "non-empty"),
    ],
)
async def test_a_pattern_re2_cannot_run_is_an_error_the_model_can_read(
    ctx: ToolContext, pattern: str, why: str
) -> None:
    out = await Grep().run({"pattern": pattern}, ctx)
    assert out.is_error and why in str(out.content), out.content


@pytest.mark.parametrize(
    ("pattern", "found"),
    [
        ("**/*.py", ["src/a.py", "src/deep/b.py"]),
        ("src/*.py", ["src/a.py"]),
        ("src/**", ["src/a.py", "src/deep/b.py", "src/deep/c.md"]),
        ("**/deep/[bc].*", ["src/deep/b.py", "src/deep/c.md"]),
        ("**/[!b].??", ["src/a.py", "src/deep/c.md"]),
        ("*.txt", ["evil.txt"]),
        ("**/**/**/**/**/**/**/**/**/**/**/**/*.md", ["src/deep/c.md"]),
        ("(a+)+$", []),  # glob characters only: parentheses are literal
    ],
)
async def test_glob_matches_by_segments_in_one_walk(ctx: ToolContext, pattern: str, found: list[str]) -> None:
    out = await Glob().run({"pattern": pattern}, ctx)
    assert not out.is_error
    assert out.content == ("\n".join(found) if found else "No files found")


async def test_grep_filters_files_by_name_or_by_path(ctx: ToolContext) -> None:
    by_name = await Grep().run({"pattern": "=", "glob": "b.py"}, ctx)
    assert by_name.content == "src/deep/b.py:1:y = 2"
    by_path = await Grep().run({"pattern": "=", "glob": "src/*.py"}, ctx)
    assert by_path.content == "src/a.py:1:x = 1"
    refused = await Grep().run({"pattern": "=", "glob": "x" * (patterns.MAX_PATTERN_CHARS + 1)}, ctx)
    assert refused.is_error


def test_no_model_pattern_reaches_pythons_re() -> None:
    # The file tools import neither `re` nor what compiles patterns with it (fnmatch, glob).
    root = Path(__file__).parents[2] / "processors" / "tools"
    for name in ("search.py", "patterns.py", "files.py"):
        tree = ast.parse((root / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"re", "fnmatch", "glob"}, name
