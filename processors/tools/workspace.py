"""Workspaces and path safety: a file tool touches nothing outside its session's directory.

A path is resolved relative to the workspace (an absolute path must already lie inside
it), with every symlink followed, and refused unless the result is still inside: `..`,
absolute paths elsewhere, symlinks pointing out and `/proc` all end as a refusal the
model can read, never as an exception that reaches the worker.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from eventstore import tenants

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
SANDBOX_UID = 65534  # nobody


class PathRefused(Exception):
    """A path the tool may not touch; the message is for the model."""


def _tenant_dir(tenant_id: str) -> str:
    """The tenant's directory name: the id itself when it keeps the tenant id rule (which
    admits no `..`), else a cleaned, digested name (an event forged around the api)."""
    if tenants.is_tenant_id(tenant_id):
        return tenant_id
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:10]
    return f"_{_UNSAFE.sub('_', tenant_id)[:40]}-{digest}"


def workspace_path(root: Path, tenant_id: str, session_id: str) -> Path:
    """Where the session's workspace directory is under `root` (whether or not it exists).

    Names are made filesystem-safe; a digest keeps two ids that clean to the same name apart.
    """
    digest = hashlib.sha256(f"{tenant_id}/{session_id}".encode()).hexdigest()[:10]
    name = f"{_UNSAFE.sub('_', session_id)[:80]}-{digest}"
    base = root.resolve()
    path = base / _tenant_dir(tenant_id) / name
    if Path(os.path.normpath(path)).parent.parent != base:  # defense in depth: ids come from events
        raise PathRefused(f"no workspace for tenant {tenant_id[:80]!r}: it would leave {base}")
    return path


def workspace_for(root: Path, tenant_id: str, session_id: str) -> Path:
    """The session's workspace directory under `root` (created on first use)."""
    path = workspace_path(root, tenant_id, session_id)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The sandbox runs commands as `nobody`; the workspace is theirs to write.
            os.chown(path, SANDBOX_UID, SANDBOX_UID)
    return path


def remove_workspace(root: Path, tenant_id: str, session_id: str) -> bool:
    """Remove the session's workspace and everything in it (its session was deleted);
    False if it had none. Symlinks inside are removed, never followed."""
    path = workspace_path(root, tenant_id, session_id)
    if not path.is_dir() or path.is_symlink():
        return False
    shutil.rmtree(path)
    return True


def resolve(workspace: Path, raw: object, *, must_exist: bool = False) -> Path:
    """The real path of `raw` inside the workspace, or PathRefused saying why not."""
    if not isinstance(raw, str) or not raw.strip():
        raise PathRefused("a path must be a non-empty string")
    if "\x00" in raw:
        raise PathRefused("a path must not contain NUL characters")
    root = workspace.resolve()
    given = Path(raw)
    candidate = given if given.is_absolute() else root / given
    # strict=False: the last parts may not exist yet (Write), but every existing symlink
    # on the way is followed, so a link pointing out is seen for what it is.
    real = Path(os.path.realpath(candidate))
    if real != root and root not in real.parents:
        raise PathRefused(f"{raw!r} is outside the workspace; use a path inside {root}")
    if must_exist and not real.exists():
        raise PathRefused(f"{raw!r} does not exist in the workspace")
    return real


def relative(workspace: Path, path: Path) -> str:
    """How a path inside the workspace is shown to the model."""
    try:
        return str(path.relative_to(workspace.resolve())) or "."
    except ValueError:
        return str(path)
