"""User tools as code: `@tool` turns a typed function into a tool of the registry.

The JSON schema the model sees comes from the signature and the docstring (pydantic); the
input is validated before the function runs, and a bad input is an error result the model
can read. `effect` is the call's idempotency class (DESIGN.md), `write` (never rerun) unless
said; a `guarded_write` tool names a check (`@mytool.check`) that tells, after a crash,
whether its effect is in place. Sync functions run in a thread, async ones on the
executor's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar, cast, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from eventstore.settings import Settings
from processors.tools.errors import ToolConfigError, ToolError
from processors.tools.registry import EffectClass, ToolContext, ToolOutput, within

P = ParamSpec("P")
R = TypeVar("R")

EFFECTS: tuple[EffectClass, ...] = ("read", "fetch", "idempotent_write", "guarded_write", "write")
# The Messages API's pattern for tool names.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
_PARAM = re.compile(r"^(?P<name>\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(?P<text>.*)$")


class FunctionTool(Generic[P, R]):
    """A decorated function as a registry tool; calling it calls the function unchanged."""

    uses_workspace: ClassVar[bool] = True  # one call at a time per session's workspace

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        description: str,
        effect: EffectClass,
        approval: bool,
        timeout_s: float | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.effect = effect
        self.approval = approval
        self.timeout_s = timeout_s
        doc, params = _docstring(fn)
        self.description = description or doc or f"The {name} tool."
        self.model, self.context_param = _input_model(fn, name, params)
        self.input_schema = _schema(self.model)
        self.checker: Callable[..., Any] | None = None
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tool {self.name} ({self.effect}) from {self.fn.__module__}.{self.fn.__qualname__}>"

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        return self.effect

    def check(self, checker: Callable[..., bool]) -> Callable[..., bool]:
        """Decorate the check of a `guarded_write` tool: given the call's input (any of the
        tool's parameters, its ToolContext too), whether the call's effect is in place."""
        known = {*self.model.model_fields, self.context_param}
        for param in inspect.signature(checker).parameters:
            if param not in known:
                raise ToolConfigError(f"tool {self.name}: its check takes {param!r}, which the tool does not")
        self.checker = checker
        return checker

    def ready(self) -> None:
        """Refuse a tool that cannot be run as declared (at start-up, once its module is loaded)."""
        if self.effect == "guarded_write" and self.checker is None:
            raise ToolConfigError(
                f"tool {self.name} is a guarded_write without a check: decorate one with @{self.name}.check"
            )

    async def confirm(self, tool_input: dict[str, Any], ctx: ToolContext) -> bool | None:
        """The check's verdict on a call: True (in place), False (not: run it), None (it could
        not tell: it raised or answered something else)."""
        if self.checker is None:
            return None
        try:
            parsed = self.model.model_validate(tool_input)
        except ValidationError:
            return False  # a call whose input is wrong never ran: running it answers why
        given = {field: getattr(parsed, field) for field in type(parsed).model_fields}
        if self.context_param is not None:
            given[self.context_param] = ctx
        wanted = inspect.signature(self.checker).parameters
        try:
            verdict = await _called(self.checker, {k: v for k, v in given.items() if k in wanted})
        except Exception:
            return None
        return verdict if isinstance(verdict, bool) else None

    def time_limit_s(self, settings: Settings) -> float:
        """The executor's outer limit: a little past the tool's own, which reports by class."""
        return self.limit(settings) + 1.0

    def limit(self, settings: Settings) -> float:
        """The tool's time limit: its own, or the executor's default."""
        return self.timeout_s if self.timeout_s is not None else settings.tool_timeout_s

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Validate the input, call the function within its time limit, shape its return."""
        try:
            parsed = self.model.model_validate(tool_input)
        except ValidationError as exc:
            return ToolOutput(invalid_input(self.name, exc), is_error=True)
        kwargs = {field: getattr(parsed, field) for field in type(parsed).model_fields}
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        limit = self.limit(ctx.settings)
        try:
            value = await within(_called(self.fn, kwargs), limit)
        except ToolError as exc:
            return ToolOutput(str(exc), is_error=True)
        except TimeoutError:
            if self.effect in ("write", "guarded_write"):
                return ToolOutput(
                    f"outcome unknown: {self.name} did not finish within {limit:g} s; it was stopped"
                    " and may or may not have taken effect. Check before retrying.",
                    is_error=True,
                )
            return ToolOutput(f"{self.name} did not finish within {limit:g} s and was stopped", is_error=True)
        return as_output(value)


@overload
def tool(fn: Callable[P, R], /) -> FunctionTool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    effect: EffectClass = "write",
    approval: bool = False,
    timeout_s: float | None = None,
) -> Callable[[Callable[P, R]], FunctionTool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    effect: EffectClass = "write",
    approval: bool = False,
    timeout_s: float | None = None,
) -> FunctionTool[P, R] | Callable[[Callable[P, R]], FunctionTool[P, R]]:
    """Make a typed function a tool: `@tool` or `@tool(effect="read", approval=True, timeout_s=30)`.

    `effect` is how a call may be repeated after a crash: `read` and `fetch` run again or
    reuse a recorded result; `write` (the default) never runs twice, and a call cut short
    is reported to the model as "outcome unknown"; `guarded_write` asks its check
    (`@name.check`) whether a call cut short took effect: done, run it, or unknown.
    `approval=True` makes every call wait for a human. A parameter annotated `ToolContext`
    receives the call's context.
    """
    if effect not in EFFECTS:
        raise ToolConfigError(f"effect must be one of {', '.join(EFFECTS)}, not {effect!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ToolConfigError(f"timeout_s must be positive, not {timeout_s!r}")

    def decorate(fn: Callable[P, R]) -> FunctionTool[P, R]:
        tool_name = name or str(getattr(fn, "__name__", ""))
        if not TOOL_NAME.match(tool_name):
            raise ToolConfigError(f"tool name {tool_name!r} must match {TOOL_NAME.pattern}")
        return FunctionTool(
            fn,
            name=tool_name,
            description=description or "",
            effect=effect,
            approval=approval,
            timeout_s=timeout_s,
        )

    return decorate(fn) if fn is not None else decorate


async def _called(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a sync or async function; a sync one in a thread."""
    if inspect.iscoroutinefunction(fn):
        return await cast(Callable[..., Awaitable[Any]], fn)(**kwargs)
    # A thread cannot be stopped: past the limit it finishes unobserved (reported as such).
    value = await asyncio.to_thread(fn, **kwargs)
    return await value if inspect.isawaitable(value) else value  # a wrapped coroutine function


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description (the docstring before its Args section) and each parameter's text
    (Google style: `name: text` or `name (type): text`, continued on deeper lines)."""
    lines = (inspect.getdoc(fn) or "").splitlines()
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return "\n".join(lines).strip(), {}
    body = lines[start + 1 :]
    base = next((_indent(line) for line in body if line.strip()), 0)
    params: dict[str, str] = {}
    current: str | None = None
    for line in body:
        if not line.strip():
            continue
        if _indent(line) == 0:
            break  # the next section (Returns:, Raises:)
        found = _PARAM.match(line.strip())
        if found is not None and _indent(line) == base:
            current = found.group("name").lstrip("*")
            params[current] = found.group("text").strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return "\n".join(lines[:start]).strip(), params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _input_model(
    fn: Callable[..., Any], name: str, described: dict[str, str]
) -> tuple[type[BaseModel], str | None]:
    """A pydantic model of the function's parameters (bar its ToolContext), and that one's name."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolConfigError(f"tool {name}: cannot resolve its annotations: {exc}") from exc
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolConfigError(f"tool {name}: parameter {param.name} must be an ordinary named parameter")
        hint = hints.get(param.name)
        if hint is ToolContext:
            context_param = param.name
            continue
        if hint is None:
            raise ToolConfigError(f"tool {name}: parameter {param.name} needs a type annotation")
        default = ... if param.default is param.empty else param.default
        text = described.get(param.name)
        fields[param.name] = (hint, Field(default, description=text) if text else default)
    model: type[BaseModel] = create_model(f"{name}_input", __config__=ConfigDict(extra="forbid"), **fields)
    return model, context_param


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without pydantic's generated titles (noise for the model)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


def invalid_input(name: str, exc: ValidationError) -> str:
    """A validation failure as the model should read it: each wrong field and why."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "input"
        shown = json.dumps(error.get("input"), default=str)[:80]
        got = "" if error["type"] == "missing" else f" (got {shown})"
        problems.append(f"{where}: {error['msg']}{got}")
    return f"invalid input for {name}: " + "; ".join(problems)


def as_output(value: Any) -> ToolOutput:
    """What a tool returned, as its result: text as it is, a ToolOutput unchanged, else JSON."""
    if isinstance(value, ToolOutput):
        return value
    if isinstance(value, str):
        return ToolOutput(value)
    return ToolOutput(json.dumps(to_jsonable_python(value), ensure_ascii=False))
