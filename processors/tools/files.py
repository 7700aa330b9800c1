"""File tools, named and shaped as models know them: Read (a pure read) and Write, Edit
(guarded writes); Grep and Glob are in `processors.tools.search`. Paths are relative to the
session's workspace and never leave it; a refusal or a failure is a result the model can read.

A guarded write is planned before it is applied: the plan names the file, the sha256 of
its content now (the pre-image, None when it does not exist) and of its content after
(the post-image). The executor records the plan before applying it, so after a crash it
can tell done (post-image present) from not done (pre-image) from changed by someone else.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from processors.tools import quota
from processors.tools.registry import EffectClass, ToolContext, ToolOutput
from processors.tools.workspace import PathRefused, relative, resolve

READ_DEFAULT_LINES = 2000
READ_MAX_LINE = 2000
MAX_FILE_BYTES = 20_000_000


def sha256_of(path: Path) -> str | None:
    """The sha256 of a regular file's bytes, or None when there is no such file (anything
    that is not a regular file, a FIFO say, hashes as "special" and is never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "special"
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def error(message: str) -> ToolOutput:
    """A result the model reads as a failure."""
    return ToolOutput(message, is_error=True)


def text_of(path: Path, shown: str) -> str | ToolOutput:
    """A regular file's text (shown to the model as `shown`), or an error result saying why not."""
    try:
        # Non-blocking open and fstat: a FIFO or a device is refused, never waited on.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return error(f"{shown} does not exist")
    except IsADirectoryError:
        return error(f"{shown} is a directory; use Glob to list files")
    except OSError as exc:
        return error(f"cannot read {shown}: {exc.strerror}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return error(f"{shown} is a directory; use Glob to list files")
        if not stat.S_ISREG(info.st_mode):
            return error(f"{shown} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            return error(
                f"{shown} is {info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit of file tools"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if b"\x00" in data[:8192]:
        return error(f"{shown} is a binary file ({len(data)} bytes)")
    return data.decode("utf-8", errors="replace")


def _match_owner(path: Path, workspace: Path) -> None:
    """Files the executor writes belong to the workspace's owner (the sandbox user), so
    that Bash can change them too."""
    if os.geteuid() != 0:
        return
    st = workspace.stat()
    for part in [path, *path.parents]:
        if part == workspace or workspace not in part.parents:
            break
        os.lchown(part, st.st_uid, st.st_gid)  # never through a symlink


def _write_atomically(path: Path, content: bytes, workspace: Path) -> None:
    """The file holds either its old content or the new one, never a part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o664)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _match_owner(path, workspace)


class FileTool:
    """File tools do blocking I/O: they run in a thread, never on the event loop."""

    def run_sync(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        raise NotImplementedError

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        return await asyncio.to_thread(self.run_sync, tool_input, ctx)


class Read(FileTool):
    name = "Read"
    description = (
        "Reads a file from the workspace. Lines are numbered from 1 (`cat -n` style). "
        f"By default up to {READ_DEFAULT_LINES} lines from the start; use offset and limit for more. "
        "Relative paths are relative to the workspace."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "the file to read"},
            "offset": {"type": "integer", "minimum": 1, "description": "the line to start at (1-based)"},
            "limit": {"type": "integer", "minimum": 1, "description": "how many lines to read"},
        },
        "required": ["file_path"],
    }

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "read"

    def run_sync(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        try:
            path = resolve(ctx.workspace, tool_input.get("file_path"))
        except PathRefused as exc:
            return error(str(exc))
        offset, limit = tool_input.get("offset", 1), tool_input.get("limit", READ_DEFAULT_LINES)
        if not isinstance(offset, int) or offset < 1 or not isinstance(limit, int) or limit < 1:
            return error("offset and limit must be positive integers")
        text = text_of(path, relative(ctx.workspace, path))
        if isinstance(text, ToolOutput):
            return text
        lines = text.splitlines()
        if not lines:
            return ToolOutput(f"{relative(ctx.workspace, path)} is empty")
        chosen = lines[offset - 1 : offset - 1 + limit]
        if not chosen:
            return error(f"offset {offset} is past the end ({len(lines)} lines)")
        out = [
            f"{n:>6}\t{line if len(line) <= READ_MAX_LINE else line[:READ_MAX_LINE] + '… [line cut]'}"
            for n, line in enumerate(chosen, offset)
        ]
        rest = len(lines) - (offset - 1 + len(chosen))
        if rest > 0:
            out.append(f"[{rest} more lines; read on with offset={offset + len(chosen)}]")
        return ToolOutput("\n".join(out))


@dataclass(frozen=True)
class WritePlan:
    """A guarded write, before it is applied: enough to recognise it afterwards."""

    path: Path
    pre_sha256: str | None
    post_sha256: str
    content: bytes
    summary: str

    def intent(self) -> dict[str, Any]:
        """What the ledger records before the write (no content: hashes suffice)."""
        return {"path": str(self.path), "pre_sha256": self.pre_sha256, "post_sha256": self.post_sha256}


class _GuardedWrite(FileTool):
    """Plan, then apply; `run` does both (the executor does them around its ledger)."""

    name: str

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return "guarded_write"

    def plan(self, tool_input: dict[str, Any], ctx: ToolContext) -> WritePlan | ToolOutput:
        """The write planned, or an error result: a bad input, or a file that would take the
        workspace past its quota (the write never starts, so nothing is left half done)."""
        planned = self._plan(tool_input, ctx)
        if isinstance(planned, ToolOutput):
            return planned
        limit = ctx.settings.workspace_max_bytes
        refused = quota.refusal(ctx.workspace, limit, len(planned.content), planned.path)
        return error(f"{self.name} refused: {refused}") if refused else planned

    def _plan(self, tool_input: dict[str, Any], ctx: ToolContext) -> WritePlan | ToolOutput:
        raise NotImplementedError

    def apply(self, plan: WritePlan, ctx: ToolContext) -> ToolOutput:
        try:
            _write_atomically(plan.path, plan.content, ctx.workspace.resolve())
        except OSError as exc:
            return error(f"cannot write {relative(ctx.workspace, plan.path)}: {exc.strerror}")
        return ToolOutput(plan.summary)

    def run_sync(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        plan = self.plan(tool_input, ctx)
        return plan if isinstance(plan, ToolOutput) else self.apply(plan, ctx)


class Write(_GuardedWrite):
    name = "Write"
    description = (
        "Writes a file in the workspace, creating it (and its directories) or replacing its "
        "whole content. Prefer Edit to change part of an existing file."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "the file to write"},
            "content": {"type": "string", "description": "the file's whole new content"},
        },
        "required": ["file_path", "content"],
    }

    def _plan(self, tool_input: dict[str, Any], ctx: ToolContext) -> WritePlan | ToolOutput:
        try:
            path = resolve(ctx.workspace, tool_input.get("file_path"))
        except PathRefused as exc:
            return error(str(exc))
        content = tool_input.get("content")
        if not isinstance(content, str):
            return error("content must be a string")
        if path.is_dir():
            return error(f"{relative(ctx.workspace, path)} is a directory")
        data = content.encode()
        shown = relative(ctx.workspace, path)
        return WritePlan(
            path,
            sha256_of(path),
            hashlib.sha256(data).hexdigest(),
            data,
            f"Wrote {len(data)} bytes to {shown}",
        )


class Edit(_GuardedWrite):
    name = "Edit"
    description = (
        "Replaces an exact string in a file of the workspace. old_string must occur exactly "
        "once unless replace_all is true; include enough surrounding text to make it unique."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "the file to change"},
            "old_string": {"type": "string", "description": "the exact text to replace"},
            "new_string": {"type": "string", "description": "the text to put instead"},
            "replace_all": {"type": "boolean", "description": "replace every occurrence", "default": False},
        },
        "required": ["file_path", "old_string", "new_string"],
    }

    def _plan(self, tool_input: dict[str, Any], ctx: ToolContext) -> WritePlan | ToolOutput:
        try:
            path = resolve(ctx.workspace, tool_input.get("file_path"))
        except PathRefused as exc:
            return error(str(exc))
        old, new = tool_input.get("old_string"), tool_input.get("new_string")
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            return error("old_string must be a non-empty string and new_string a string")
        if old == new:
            return error("old_string and new_string are the same; nothing to change")
        shown = relative(ctx.workspace, path)
        text = text_of(path, shown)
        if isinstance(text, ToolOutput):
            return text
        count = text.count(old)
        if count == 0:
            return error(f"old_string was not found in {shown}")
        replace_all = bool(tool_input.get("replace_all", False))
        if count > 1 and not replace_all:
            return error(
                f"old_string occurs {count} times in {shown};"
                " add context to make it unique or set replace_all"
            )
        changed = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        data = changed.encode()
        n = count if replace_all else 1
        return WritePlan(
            path,
            sha256_of(path),
            hashlib.sha256(data).hexdigest(),
            data,
            f"Replaced {n} occurrence{'s' * (n > 1)} in {shown}",
        )
