"""The search tools, Grep and Glob: pure reads over the session's workspace. The model's
patterns run on RE2 (`processors.tools.patterns`), never on Python's `re`, so a search's time
is bounded by the files it reads whatever the pattern; a pattern RE2 cannot run, a path that
leaves the workspace, are results the model can read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from processors.tools import patterns
from processors.tools.files import FileTool, error, text_of
from processors.tools.registry import EffectClass, ToolContext, ToolOutput
from processors.tools.workspace import PathRefused, relative, resolve

GREP_MAX_MATCHES = 500
GREP_SHOWN_CHARS = 500
GLOB_MAX_FILES = 1000
SEARCH_MAX_FILE_BYTES = 5_000_000


def _walk(root: Path, workspace: Path) -> list[Path]:
    """Files under `root`, not following symlinks out of the workspace, in a stable order."""
    found: list[Path] = []
    real_ws = workspace.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".git"))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            real = Path(os.path.realpath(path))
            if real_ws in real.parents and real.is_file():
                found.append(path)
    return sorted(found)


def _posix(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


class Grep(FileTool):
    name = "Grep"
    description = (
        "Searches file contents with a regular expression (RE2 syntax: Python's, without"
        " backreferences or lookaround). Returns `path:line:text` for each matching line."
        f" Only the first {patterns.MAX_LINE_CHARS} characters of a line are searched. `path` is a"
        " file or directory in the workspace (default: the whole workspace); `glob` filters files:"
        " by name (`*.py`), or by path in the workspace when it has a `/` (`src/**/*.py`)."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "the regular expression (RE2 syntax)"},
            "path": {"type": "string", "description": "file or directory to search"},
            "glob": {"type": "string", "description": "only files whose name matches, e.g. *.md"},
        },
        "required": ["pattern"],
    }

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    def run_sync(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        try:
            regex = patterns.regex(tool_input.get("pattern"))
            chosen = tool_input.get("glob")
            wanted = patterns.glob(chosen) if chosen else None
            base = resolve(ctx.workspace, tool_input.get("path") or ".", must_exist=True)
        except (patterns.PatternRefused, PathRefused) as exc:
            return error(str(exc))
        root = ctx.workspace.resolve()
        files = [base] if base.is_file() else _walk(base, ctx.workspace)
        if wanted is not None:
            by_path = "/" in str(chosen)
            files = [f for f in files if wanted(_posix(f, root) if by_path else f.name)]
        matches: list[str] = []
        cut = 0
        for path in files:
            if path.stat().st_size > SEARCH_MAX_FILE_BYTES:
                continue
            text = text_of(path, "")
            if isinstance(text, ToolOutput):
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if len(line) > patterns.MAX_LINE_CHARS:
                    cut += 1
                    line = line[: patterns.MAX_LINE_CHARS]
                if regex.search(line) is not None:
                    matches.append(f"{relative(ctx.workspace, path)}:{n}:{line[:GREP_SHOWN_CHARS]}")
                    if len(matches) >= GREP_MAX_MATCHES:
                        matches.append(f"[stopped at {GREP_MAX_MATCHES} matches]")
                        return ToolOutput("\n".join(matches))
        if cut:
            matches.append(
                f"[{cut} line{'s' * (cut > 1)} longer than {patterns.MAX_LINE_CHARS} characters:"
                " searched in their first part only]"
            )
        return ToolOutput("\n".join(matches) if matches else "No matches")


class Glob(FileTool):
    name = "Glob"
    description = (
        "Lists files in the workspace whose path matches a glob pattern such as `**/*.py` "
        "or `src/*.md`, relative to `path` (default: the workspace root)."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "the glob pattern"},
            "path": {"type": "string", "description": "the directory to search from"},
        },
        "required": ["pattern"],
    }

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    def run_sync(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        pattern = tool_input.get("pattern")
        if isinstance(pattern, str) and (Path(pattern).is_absolute() or ".." in Path(pattern).parts):
            return error("pattern must be relative and stay inside the workspace (no '..')")
        try:
            wanted = patterns.glob(pattern)
            base = resolve(ctx.workspace, tool_input.get("path") or ".", must_exist=True)
        except (patterns.PatternRefused, PathRefused) as exc:
            return error(str(exc))
        if not base.is_dir():
            return error(f"{relative(ctx.workspace, base)} is not a directory")
        # One walk, each path tested once: no glob expansion whose work grows with the
        # number of `**` in the pattern.
        found: list[str] = []
        for path in _walk(base, ctx.workspace):
            if wanted(_posix(path, base)):
                found.append(relative(ctx.workspace, path))
                if len(found) >= GLOB_MAX_FILES:
                    found.append(f"[stopped at {GLOB_MAX_FILES} files]")
                    break
        return ToolOutput("\n".join(found) if found else "No files found")
