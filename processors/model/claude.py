"""The ModelClient adapter for Claude, through the `anthropic` SDK.

It owns the request shape (prompt-caching breakpoints included), the translation of every
SDK and transport error into a ModelError, and the assembled message as verbatim blocks.
The SDK's own retries are off: `call_with_retry` is the one retry loop.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import replace
from typing import Any, get_args

import anthropic
import httpx2
from anthropic.types import Message

from eventstore.events import StopReason, Usage
from processors.model.port import ModelError, ModelRequest, ModelResponse
from processors.model.retry import RetryPolicy, call_with_retry

EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4  # the API rejects a request with more cache_control blocks
_STOP_REASONS: frozenset[str] = frozenset(get_args(StopReason))
# Error types that the API may also report in an `error` event after a stream has begun.
_RETRYABLE_TYPES = frozenset({"rate_limit_error", "api_error", "overloaded_error", "timeout_error"})
# A breakpoint on these would be rejected by the API.
_UNCACHEABLE_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def sdk_deprecations() -> Mapping[str, str]:
    """The models the installed SDK marks deprecated, with their end of life. The SDK keeps
    this table in a private module; if it moves, nothing is flagged (calls still work)."""
    try:
        from anthropic._data import DEPRECATED_MODELS
    except ImportError:  # pragma: no cover - depends on the SDK's layout
        return {}
    return dict(DEPRECATED_MODELS)


class ClaudeModel:
    """ModelClient for the Anthropic Messages API (streaming by default)."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout_s: float = 600.0,
        stream: bool = True,
        retry: RetryPolicy | None = None,
        cache: bool = True,
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            open_telemetry=False,  # our own spans are the one source of model-call traces
        )
        self._stream = stream
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout_s
        self._cache = cache
        self._deprecated = sdk_deprecations()

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The underlying SDK client (for count_tokens and the like)."""
        return self._client

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request, retrying under the policy; raises only ModelError."""
        params = request_params(request, cache=self._cache)
        deadline = time.monotonic() + self._retry.deadline_s

        async def attempt() -> ModelResponse:
            # The SDK's timeout bounds each read; a stream that keeps trickling (pings) could
            # outlive it. This bounds the whole attempt, and never past the retry deadline.
            limit = min(self._timeout_s, deadline - time.monotonic())
            if limit <= 0:
                raise ModelError(f"retry deadline of {self._retry.deadline_s:g}s reached", retryable=False)
            try:
                async with asyncio.timeout(limit):
                    return to_response(await self._send(params, request.on_text))
            except TimeoutError as exc:
                raise ModelError(f"request timed out after {limit:.1f}s", retryable=True) from exc

        response, attempts = await call_with_retry(attempt, self._retry)
        return replace(response, attempts=attempts, deprecated=self._deprecated.get(request.model))

    async def aclose(self) -> None:
        """Close the SDK client and its connections."""
        await self._client.close()

    async def _send(
        self, params: dict[str, Any], on_text: Callable[[str], Awaitable[None]] | None = None
    ) -> Message:
        try:
            if not self._stream:
                message: Message = await _QuietStart(self._client.messages.create(**params))
                return message
            # The SDK warns (DeprecationWarning) on a deprecated model as it builds the stream;
            # the model worker flags that once and counts it (ModelResponse.deprecated), so the
            # warning must never become a failed call where warnings are errors.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                manager = self._client.messages.stream(**params)
            async with manager as stream:
                stopped = False
                async for event in stream:
                    stopped = stopped or event.type == "message_stop"
                    if on_text is not None and event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            await on_text(delta.text)
                if not stopped:
                    raise ModelError("stream ended before message_stop", retryable=True)
                return await stream.get_final_message()
        except ModelError:
            raise
        except Exception as err:
            raise translate_error(err) from err


class _QuietStart:
    """Awaits a coroutine with DeprecationWarning ignored during its first step, where the
    SDK's `create` checks the model (no other coroutine runs within one step, so the filter
    touches nothing else); later steps run under the caller's filters."""

    def __init__(self, coro: Coroutine[Any, Any, Message]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Message]:
        steps = self._coro.__await__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                value = next(steps)
            except StopIteration as done:
                result: Message = done.value
                return result
        while True:  # `yield from`, resumed after the first step
            try:
                sent = yield value
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:
                try:
                    value = steps.throw(exc)
                except StopIteration as done:
                    result = done.value
                    return result
            else:
                try:
                    value = steps.send(sent)
                except StopIteration as done:
                    result = done.value
                    return result


def request_params(request: ModelRequest, *, cache: bool = True) -> dict[str, Any]:
    """The keyword arguments of `messages.create` / `messages.stream` for a request.

    With `cache`, prompt-caching breakpoints go on the last message's last cacheable block,
    the system prompt and the last tool, in that order of value, up to the API's limit of
    four counting any the caller already placed. The caller's dicts are never mutated.
    """
    params: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
    tools: list[dict[str, Any]] = list(request.tools)
    # Breakpoints stored in the history (a client may post blocks with cache_control) must
    # never push a request over the API's limit: the oldest go, one slot stays for ours.
    keep = MAX_BREAKPOINTS - _count_breakpoints(tools) - (1 if cache else 0)
    messages = _keep_newest_breakpoints(list(request.messages), max(keep, 0))
    system: str | list[dict[str, Any]] | None = request.system or None
    if cache:
        budget = MAX_BREAKPOINTS - _count_breakpoints(messages) - _count_breakpoints(tools)
        if budget > 0 and messages and (marked := _mark_last_message(messages[-1])) is not None:
            messages[-1] = marked
            budget -= 1
        if budget > 0 and system:
            system = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
            budget -= 1
        if budget > 0 and tools and "cache_control" not in tools[-1]:
            tools[-1] = {**tools[-1], "cache_control": dict(EPHEMERAL)}
    params["messages"] = messages
    if system:
        params["system"] = system
    if tools:
        params["tools"] = tools
    return params


def _without_breakpoints(block: dict[str, Any]) -> dict[str, Any]:
    stripped = {k: v for k, v in block.items() if k != "cache_control"}
    content = stripped.get("content")
    if isinstance(content, list):
        stripped["content"] = [_without_breakpoints(b) if isinstance(b, dict) else b for b in content]
    return stripped


def _keep_newest_breakpoints(messages: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Copies of the messages with only the newest `keep` breakpoints of the history left."""
    out = list(messages)
    seen = 0
    for i in range(len(out) - 1, -1, -1):
        found = _count_breakpoints([out[i]])
        if found and seen + found > keep:
            out[i] = _without_breakpoints(out[i])
            found = 0
        seen += found
    return out


def _count_breakpoints(items: list[dict[str, Any]]) -> int:
    """Breakpoints already placed on tools, message blocks, or blocks nested in tool results."""
    count = 0
    for item in items:
        count += "cache_control" in item
        content = item.get("content")
        if isinstance(content, list):
            count += _count_breakpoints([b for b in content if isinstance(b, dict)])
    return count


def _mark_last_message(msg: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of `msg` with a breakpoint on its last cacheable block, or None if it has none."""
    content = msg.get("content")
    if isinstance(content, str):
        if not content:
            return None
        return {**msg, "content": [{"type": "text", "text": content, "cache_control": dict(EPHEMERAL)}]}
    if not isinstance(content, list):
        return None
    for i in range(len(content) - 1, -1, -1):
        block = content[i]
        if not isinstance(block, dict) or block.get("type") in _UNCACHEABLE_BLOCKS:
            continue
        if "cache_control" in block or (block.get("type") == "text" and not block.get("text")):
            return None
        blocks = list(content)
        blocks[i] = {**copy.deepcopy(block), "cache_control": dict(EPHEMERAL)}
        return {**msg, "content": blocks}
    return None


def to_response(message: Message) -> ModelResponse:
    """The assembled SDK message as a ModelResponse with verbatim JSON blocks."""
    stop_reason = message.stop_reason
    if stop_reason is not None and stop_reason not in _STOP_REASONS:
        raise ModelError(f"unsupported stop_reason {stop_reason!r}", retryable=False)
    usage = message.usage
    return ModelResponse(
        model=message.model,
        # Only what the API sent (new block types too); no nulls, so streamed and JSON answers match.
        content=[
            b.to_dict(mode="json", exclude_unset=True, exclude_none=True, warnings=False)
            for b in message.content
        ],
        stop_reason=stop_reason,
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        ),
    )


def translate_error(err: BaseException) -> ModelError:
    """The ModelError for anything the SDK (or its transport, mid-stream) raises."""
    if isinstance(err, anthropic.APIStatusError):
        return _status_error(err)
    if isinstance(err, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ModelError("request timed out", retryable=True)
    if isinstance(err, anthropic.APIConnectionError):
        cause = err.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else err.message
        return ModelError(f"connection error: {detail}", retryable=True)
    if isinstance(err, httpx2.TransportError):
        # The SDK wraps transport errors of the request, not those of a stream being read.
        return ModelError(f"connection error: {type(err).__name__}: {err}", retryable=True)
    return ModelError(f"{type(err).__name__}: {err}", retryable=False)


def _status_error(err: anthropic.APIStatusError) -> ModelError:
    kind = err.type or "error"
    message = err.api_message or err.message
    status = err.status_code
    if status < 300:
        # An `error` event inside a 200 stream: only the body says what happened.
        return ModelError(f"stream error {kind}: {message}", retryable=kind in _RETRYABLE_TYPES)
    return ModelError(
        f"{status} {kind}: {message}",
        retryable=status in (408, 409, 429) or status >= 500,
        status=status,
        retry_after_s=retry_after(err.response.headers),
    )


def retry_after(headers: httpx2.Headers, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))
