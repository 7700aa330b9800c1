"""The ModelClient port: one request in, one assembled assistant message out (or a ModelError)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventstore.events import Block, StopReason, Usage


@dataclass(frozen=True)
class ModelRequest:
    """What a model call needs: the model, the system prompt, the conversation, the tools.

    `key` is the call's deterministic ledger key (session/turn/step); adapters may use it
    for logging or request metadata, never for behaviour.
    """

    model: str
    messages: list[dict[str, Any]]
    system: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    max_tokens: int = 4096
    key: str = ""
    # Called with text as it streams (ephemeral: for live views; the message is the record).
    on_text: Callable[[str], Awaitable[None]] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ModelResponse:
    """The assembled assistant message and its usage; content blocks verbatim."""

    model: str
    content: list[Block]
    stop_reason: StopReason | None
    usage: Usage
    attempts: int = 1
    # The end of life of a model the SDK marks deprecated (it still answers; flag it once).
    deprecated: str | None = None


class ModelError(Exception):
    """A model call that did not produce a message.

    `retryable` errors (429, 500, 529, timeouts, a cut connection) may succeed if sent
    again; the others (400, 401, 403, 404, 413) never will, and end the turn with `reason`.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(reason)
        self.attempts = attempts
        self.reason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class ModelClient(Protocol):
    """Anything that answers a ModelRequest, raising ModelError when it cannot."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...
