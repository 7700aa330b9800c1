"""The ModelClient port: one request in, one assembled assistant message out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from eventstore.events import Block, StopReason, Usage


@dataclass(frozen=True)
class ModelRequest:
    """What a model call needs: the model, the system prompt, the conversation."""

    model: str
    messages: list[dict[str, Any]]
    system: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelResponse:
    """The assembled assistant message and its usage."""

    model: str
    content: list[Block]
    stop_reason: StopReason | None
    usage: Usage


class ModelClient(Protocol):
    """Anything that answers a ModelRequest."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...
