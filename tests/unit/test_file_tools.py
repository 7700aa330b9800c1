"""File tools on a real directory: paths never leave the workspace; guarded writes plan first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore.settings import Settings
from processors.tools.files import Edit, Read, Write, WritePlan, sha256_of
from processors.tools.registry import ToolContext
from processors.tools.search import Glob, Grep
from processors.tools.workspace import PathRefused, resolve, workspace_for


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "outside.txt").write_text("secret outside")
    (ws / "notes.md").write_text("alpha\nbeta\ngamma\n")
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("def f():\n    return 1\n")
    (ws / "escape").symlink_to(tmp_path / "outside.txt")
    (ws / "up").symlink_to(tmp_path)
    return ToolContext(session_id="s", workspace=ws, settings=Settings())


TRAVERSALS = [
    "../outside.txt",
    "src/../../outside.txt",
    "/etc/passwd",
    "/proc/self/environ",
    "escape",
    "up/outside.txt",
    "up",
    "./up/../outside.txt",
    "",
    "   ",
    "a\x00b",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_paths_that_leave_the_workspace_are_refused(ctx: ToolContext, raw: str) -> None:
    with pytest.raises(PathRefused):
        resolve(ctx.workspace, raw)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["..", ".", "src", "up", "escape", "x", "/", "notes.md", "//", "proc"]), max_size=8
    )
)
def test_any_resolved_path_is_inside_the_workspace(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    base = tmp_path_factory.getbasetemp() / "hyp"
    ws = base / "ws"
    if not ws.exists():
        ws.mkdir(parents=True)
        (ws / "src").mkdir()
        (ws / "up").symlink_to(base)
        (ws / "escape").symlink_to("/etc/hostname")
    raw = "/".join(parts)
    try:
        real = resolve(ws, raw)
    except PathRefused:
        return
    root = ws.resolve()
    assert real == root or root in real.parents


async def test_read_numbers_lines_and_pages(ctx: ToolContext) -> None:
    out = await Read().run({"file_path": "notes.md"}, ctx)
    assert not out.is_error and out.content == "     1\talpha\n     2\tbeta\n     3\tgamma"
    out = await Read().run({"file_path": "notes.md", "offset": 2, "limit": 1}, ctx)
    assert out.content == "     2\tbeta\n[1 more lines; read on with offset=3]"
    for bad in ({"file_path": "missing"}, {"file_path": "src"}, {"file_path": "escape"}, {"file_path": 3}):
        assert (await Read().run(bad, ctx)).is_error


async def test_write_then_edit_then_grep_and_glob(ctx: ToolContext) -> None:
    out = await Write().run({"file_path": "docs/new.txt", "content": "one\ntwo\n"}, ctx)
    assert out.content == "Wrote 8 bytes to docs/new.txt" and not out.is_error
    assert (ctx.workspace / "docs" / "new.txt").read_text() == "one\ntwo\n"
    edit: dict[str, Any] = {"file_path": "docs/new.txt", "old_string": "two", "new_string": "2"}
    assert (await Edit().run(edit, ctx)).content == "Replaced 1 occurrence in docs/new.txt"
    assert (ctx.workspace / "docs" / "new.txt").read_text() == "one\n2\n"
    assert "was not found" in str((await Edit().run(edit, ctx)).content)
    (ctx.workspace / "twice.txt").write_text("x x")
    twice: dict[str, Any] = {"file_path": "twice.txt", "old_string": "x", "new_string": "y"}
    assert "occurs 2 times" in str((await Edit().run(twice, ctx)).content)
    assert (
        await Edit().run({**twice, "replace_all": True}, ctx)
    ).content == "Replaced 2 occurrences in twice.txt"
    grep = await Grep().run({"pattern": "^(one|alpha)$"}, ctx)
    assert grep.content == "docs/new.txt:1:one\nnotes.md:1:alpha"
    assert (await Grep().run({"pattern": "return", "glob": "*.py"}, ctx)).content == "src/a.py:2:    return 1"
    assert (await Grep().run({"pattern": "("}, ctx)).is_error
    glob = await Glob().run({"pattern": "**/*.txt"}, ctx)
    assert glob.content == "docs/new.txt\ntwice.txt"  # not the symlink pointing out
    assert (await Glob().run({"pattern": "../*"}, ctx)).is_error
    assert (await Write().run({"file_path": "../x", "content": "no"}, ctx)).is_error
    assert not (ctx.workspace.parent / "x").exists()


def test_a_guarded_write_knows_its_pre_and_post_images(ctx: ToolContext) -> None:
    plan = Edit().plan({"file_path": "notes.md", "old_string": "beta", "new_string": "BETA"}, ctx)
    assert isinstance(plan, WritePlan)
    assert plan.pre_sha256 == sha256_of(ctx.workspace / "notes.md")
    Edit().apply(plan, ctx)
    assert sha256_of(ctx.workspace / "notes.md") == plan.post_sha256
    fresh = Write().plan({"file_path": "brand-new", "content": ""}, ctx)
    assert isinstance(fresh, WritePlan) and fresh.pre_sha256 is None


def test_workspaces_are_per_session_and_safe_names(tmp_path: Path) -> None:
    a = workspace_for(tmp_path, "t", "../../etc")
    b = workspace_for(tmp_path, "t", "..-..-etc")
    assert a != b and tmp_path.resolve() in a.parents and a.is_dir()
    if os.geteuid() == 0:
        assert a.stat().st_uid == 65534


async def test_special_files_are_refused_not_waited_on(ctx: ToolContext) -> None:
    os.mkfifo(ctx.workspace / "pipe")
    out = await Read().run({"file_path": "pipe"}, ctx)
    assert out.is_error and "not a regular file" in str(out.content)
    edit = await Edit().run({"file_path": "pipe", "old_string": "a", "new_string": "b"}, ctx)
    assert edit.is_error
    assert sha256_of(ctx.workspace / "pipe") == "special"
