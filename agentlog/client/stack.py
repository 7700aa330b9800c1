"""Where the api is: the environment (`AGENTLOG_API_URL`, …) or the stack file `agentlog up` writes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlog.client.errors import NotConfigured

if TYPE_CHECKING:
    from agentlog.client.sync import Agentlog

__all__ = ["DEFAULT_STACK", "StackInfo", "api_of", "from_stack", "locate"]

DEFAULT_STACK = Path(".agentlog/stack.json")


@dataclass(frozen=True)
class StackInfo:
    """Where the api and the database are, and the token to use."""

    api_url: str | None
    api_token: str | None
    database_url: str | None


def locate(path: str | Path = DEFAULT_STACK, env: Mapping[str, str] | None = None) -> StackInfo:
    """The stack from `AGENTLOG_API_URL` / `AGENTLOG_API_TOKEN` / `AGENTLOG_DATABASE_URL`, else from
    the stack file `agentlog up` writes. The file's token goes only to the file's api."""
    env = os.environ if env is None else env
    path = Path(path)
    stack: dict[str, Any] = {}
    if path.exists():
        loaded = json.loads(path.read_text())
        stack = loaded if isinstance(loaded, dict) else {}
    api_url = env.get("AGENTLOG_API_URL") or stack.get("api_url")
    token = env.get("AGENTLOG_API_TOKEN")
    if token is None and api_url == stack.get("api_url"):
        token = stack.get("api_token")
    return StackInfo(
        api_url=api_url or None,
        api_token=token or None,
        database_url=env.get("AGENTLOG_DATABASE_URL") or stack.get("database_url") or None,
    )


def api_of(path: str | Path, env: Mapping[str, str] | None) -> StackInfo:
    """`locate`, for a client: NotConfigured when no api is named."""
    info = locate(path, env)
    if info.api_url is None:
        raise NotConfigured(
            f"no api to talk to: set AGENTLOG_API_URL (and AGENTLOG_API_TOKEN), or run `agentlog up`"
            f" here so that {path} exists"
        )
    return info


def from_stack(
    path: str | Path = DEFAULT_STACK, *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Agentlog:
    """A (sync) client of the api the stack file or the environment names; see `locate`."""
    from agentlog.client.sync import Agentlog  # the client needs this module first

    return Agentlog.from_stack(path, env=env, timeout=timeout)
