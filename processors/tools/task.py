"""The Task tool: delegate a task to a sub-agent, a child session of its own.

With the queue model (the default) the reactor turns a Task call into `subagent_requested`
and a sub-agent worker runs the child; this class then only gives the model its
definition. With the HTTP model the executor runs it: it asks the api to run the child
synchronously (`POST /v1/subagent/run`), with an idempotency key derived from the call, so
a rerun after a crash waits for the same child instead of starting another.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from eventstore import ids
from eventstore.settings import Settings
from observe import tracing
from processors.tools.registry import EffectClass, ToolContext, ToolOutput


class Task:
    name = "Task"
    description = (
        "Delegates a task to a sub-agent: a separate agent with its own conversation that does "
        "the task and answers with the result. Give it a short description and a complete, "
        "self-contained prompt (it sees nothing of this conversation). Several Task calls at "
        "once run in parallel."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "a short (3-5 word) description of the task"},
            "prompt": {"type": "string", "description": "the task, in full, for the sub-agent"},
            "tools": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the tools the sub-agent may use (default: all)",
            },
        },
        "required": ["description", "prompt"],
    }

    uses_workspace = False

    def time_limit_s(self, settings: Settings) -> float:
        """Longer than the sub-agent's own timeout, so that its 504 is what the model reads."""
        return min(settings.subagent_timeout_s, 300.0) + 15

    def effect_class(self, tool_input: dict[str, Any]) -> EffectClass:
        # Rerunning it joins the same child (the key is the call's): no second sub-agent.
        return "fetch"

    async def run(self, tool_input: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        prompt = tool_input.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return ToolOutput("Task needs a non-empty `prompt`", is_error=True)
        settings = ctx.settings
        if not settings.api_url:
            return ToolOutput("Task (HTTP model) needs AGENTLOG_API_URL to be set", is_error=True)
        timeout = min(settings.subagent_timeout_s, 300.0)  # the api's limit
        body = {
            "prompt": prompt,
            "description": str(tool_input.get("description", ""))[:500],
            "tools": tool_input.get("tools") if isinstance(tool_input.get("tools"), list) else None,
            "timeout_s": timeout,
            # The service token names the stored id (the api finds its tenant); a tenant's
            # token the id its tenant knows the session by.
            "parent_session_id": ctx.session_id
            if settings.service_token
            else ids.client_session_id(ctx.tenant_id, ctx.session_id),
            # Its rules are read once the projection has this call (and what came before it).
            "parent_tool_use_id": ctx.call_id or None,
        }
        try:
            async with httpx.AsyncClient(base_url=settings.api_url, timeout=timeout + 10) as client:
                headers = {"Idempotency-Key": f"{ctx.session_id}/{ctx.call_id}"}
                if (parent := tracing.current()) is not None:  # the child's run joins this trace
                    headers["traceparent"] = parent
                if settings.service_token:  # for the parent session's tenant, whichever it is
                    headers["Authorization"] = f"Bearer {settings.service_token}"
                elif settings.api_token:  # one tenant's executor
                    headers["Authorization"] = f"Bearer {settings.api_token}"
                r = await client.post("/v1/subagent/run", json=body, headers=headers)
        except httpx.HTTPError as exc:
            return ToolOutput(
                f"the sub-agent could not be reached: {type(exc).__name__}: {exc}", is_error=True
            )
        if r.status_code == 504:
            return ToolOutput(f"the sub-agent did not finish within {timeout:g} s", is_error=True)
        if r.status_code != 200:
            return ToolOutput(f"the sub-agent failed to start: {r.status_code} {r.text[:300]}", is_error=True)
        answer = r.json()
        if answer.get("status") != "completed":
            return ToolOutput(f"the sub-agent failed: {answer.get('error')}", is_error=True)
        return ToolOutput(str(answer.get("output_text", "")))
