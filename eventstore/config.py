"""SessionConfig: a session's settings, the one definition of them. [pure]

The session_started event is built from it, the fold keeps it whole (`state.config`), the
projection, the reactor and the workers read it there, and a child's or a fork's is derived
from its parent's: a new setting is declared here and read where it is used, nowhere else.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eventstore.mcp import McpServer, check_names

# What a user message does while a turn runs: queue it, refuse it, or end the running turn.
TurnPolicy = Literal["enqueue", "reject", "interrupt"]


class AgentUsed(BaseModel):
    """The agent definition a session started from, as it was then: replay and forks see it
    so, whatever its file says today."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    sha256: str = Field(description="of the definition's canonical JSON")
    definition: dict[str, Any]


class SessionConfig(BaseModel):
    """A session's settings, fixed at its start: the model and prompt, its rules (tools,
    approvals, turn policy) and limits (steps, tokens, sub-agents, lifetime).

    What is not here is the start's lineage, kept on the event and the state beside it: the
    session's place among others (depth, parent ids, the session it was forked from and where,
    the history a fork starts with) and what its state goes on to change (`untrusted`, the MCP
    tools it was offered). Those are each session's own: a child or a fork gets its config
    from its parent's (`lineage`, `forks`) but never its lineage.

    Sequences are tuples, so that a config is a frozen value (as the state that holds it);
    their JSON is the arrays it always was. `model` is None only in the defaults of a session
    not started yet (a started session's event always names one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy: TurnPolicy = "enqueue"
    # Model calls per turn before it fails; tokens per session before its turns fail.
    max_steps: int = Field(default=25, ge=1)
    token_budget: int | None = Field(default=None, ge=1)
    # Tool names the model may use; None allows every registered tool.
    tools: tuple[str, ...] | None = None
    # Tool names whose calls wait for a human's approval.
    approvals: tuple[str, ...] = ()
    # Tool names whose calls wait for approval once untrusted content (eventstore/untrusted.py)
    # entered the session; hosts WebFetch may reach without approval (None: any).
    approve_after_untrusted: tuple[str, ...] = ()
    webfetch_allow: tuple[str, ...] | None = None
    # Sub-agents: how the Task tool runs (a queue of sub-agent workers, or the HTTP api) and
    # its limits per call.
    subagent_mode: Literal["queue", "http"] = "queue"
    subagent_timeout_s: float = Field(default=60.0, gt=0)
    subagent_attempts: int = Field(default=2, ge=1)
    max_subagents: int = Field(default=16, ge=0)
    max_depth: int = Field(default=2, ge=0)
    # An ephemeral session (POST /v1/agent/run) is deleted, not kept, once its TTL passes.
    ephemeral: bool = False
    # Idle seconds before the session expires; None keeps it forever.
    ttl_s: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=4096, ge=1)
    # Tokens a model call may fill (input and output); None: the model's window. A call that
    # would pass it compacts the session first (eventstore/context.py).
    context_window: int | None = Field(default=None, ge=1)
    # The named agent whose definition gave these settings (request fields override it).
    agent: AgentUsed | None = None
    # MCP servers of this session, besides the deployment's (a name here overrides one there).
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, servers: dict[str, McpServer]) -> dict[str, McpServer]:
        check_names(servers)
        return servers

    def updated(self, update: dict[str, Any]) -> Self:
        """This config with some settings replaced, validated (unlike `model_copy`): a value
        from JSON or a request is checked and takes the config's types."""
        return self.model_validate({**self.__dict__, **update})

    def config(self) -> SessionConfig:
        """The settings alone, whatever holds them (the payload of session_started is a
        SessionConfig with the start's lineage besides)."""
        if type(self) is SessionConfig:
            return self
        names = SessionConfig.model_fields.keys()
        values = {name: getattr(self, name) for name in names}
        return SessionConfig.model_construct(self.__pydantic_fields_set__ & names, **values)
