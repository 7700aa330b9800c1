"""The files that hold a token — stack.json (the development token), dev-token and
service-token — are readable by their owner only, whatever the umask, and an older one made
readable by others is made private again."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlog import devstack


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_stack_json_is_private(tmp_path: Path) -> None:
    stack = devstack.Stack(tmp_path, "http://127.0.0.1:1", "postgresql://x", "127.0.0.1:2", "agl_dev_x")
    stack.write()
    assert mode(tmp_path / "stack.json") == 0o600
    assert json.loads((tmp_path / "stack.json").read_text())["api_token"] == "agl_dev_x"
    (tmp_path / "stack.json").chmod(0o644)
    stack.write()  # rewritten (as on every restart of a child): private again
    assert mode(tmp_path / "stack.json") == 0o600


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("make", [devstack.dev_token, devstack.service_token])
def test_token_files_are_private_new_or_old(tmp_path: Path, make: object) -> None:
    assert callable(make)
    token = make(tmp_path)
    (made,) = list(tmp_path.iterdir())
    assert mode(made) == 0o600 and token.startswith("agl_")
    made.chmod(0o644)
    assert make(tmp_path) == token and mode(made) == 0o600
