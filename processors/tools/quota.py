"""The workspace's disk quota: what its files take (as `du` counts, in allocated blocks),
measured with a bounded walk, so that a workspace of a million files costs a bounded time
and counts as over its quota rather than unmeasured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Entries walked at most; past them the workspace counts as over its quota.
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class Usage:
    """Bytes the workspace's files take, and whether the walk saw every entry."""

    bytes: int
    complete: bool

    def over(self, limit: int) -> bool:
        return self.bytes > limit or not self.complete

    def describe(self, limit: int) -> str:
        """The refusal or note the model reads."""
        if not self.complete:
            return f"the workspace holds more than {MAX_ENTRIES} files and directories; remove some"
        return (
            f"the workspace's files take {self.bytes} bytes, over its quota of {limit} bytes;"
            " remove files to go on writing"
        )


def usage(workspace: Path, max_entries: int = MAX_ENTRIES) -> Usage:
    """Walk the workspace (never following symlinks) adding up allocated bytes."""
    total, seen = 0, 0
    stack = [str(workspace)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > max_entries:
                    return Usage(total, complete=False)
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += info.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return Usage(total, complete=True)


def refusal(workspace: Path, limit: int, adding: int = 0, replacing: Path | None = None) -> str | None:
    """Why writing `adding` bytes (in place of `replacing`, if it exists) would pass the
    quota, or None when it fits."""
    now = usage(workspace)
    if not now.complete:
        return now.describe(limit)
    freed = 0
    if replacing is not None:
        try:
            freed = replacing.lstat().st_blocks * 512
        except OSError:
            freed = 0
    after = now.bytes - freed + adding
    if after > limit:
        return (
            f"writing {adding} bytes would bring the workspace to about {after} bytes, over its quota"
            f" of {limit} bytes; remove files first"
        )
    return None
