"""agentlog's testing kit: test your own tools and agents the way agentlog tests its own.

The pytest plugin (`agentlog.testing.plugin`, loaded through the `pytest11` entry point
once agentlog is installed with its `testing` extra) gives the fixtures; the stack they
yield is `agentlog.testing.stack.Stack`. See docs/tools.md, "Testing a tool".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventstore.settings import Settings
from processors.tools.registry import ToolContext

__all__ = ["tool_context"]


def tool_context(
    workspace: Path,
    *,
    idempotency_key: str = "test-key",
    session_id: str = "test",
    tenant_id: str = "default",
    **settings: Any,
) -> ToolContext:
    """A context to call a tool's `run(input, ctx)` with in a unit test (no stack needed):
    validation, the time limit and the result's shape run as the executor runs them."""
    return ToolContext(
        session_id=session_id,
        workspace=workspace,
        settings=Settings(workspace_root=workspace, **settings),
        call_id="toolu_test",
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
    )
