"""Agents by name: a TOML file of definitions (AGENTLOG_AGENTS), read once when the api starts.

    [agents.support]
    description = "Answers questions about orders"
    model = "claude-sonnet-5-5"
    system = "You help customers with their orders."
    tools = ["Read", "lookup", "refund"]     # built-in and users' tools, by name
    approvals = ["refund"]
    max_steps = 10
    token_budget = 200000

A session started from an agent (`{"agent": "support", ...}`, the request's fields
overriding) records the definition in its first event, so replay and forks see the agent
as it was. MCP servers' tools are named `server__tool`; Claude Code's `mcp__SERVER__TOOL` is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from api.problems import Problem
from api.routes.common import SessionSettings
from eventstore import events as ev
from eventstore.errors import AgentlogError

AGENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
MCP_PREFIX = "mcp__"


class AgentsFileError(AgentlogError):
    """The agents file cannot be read or holds a definition that is wrong; the api does not start."""

    retriable = False


class AgentDefinition(SessionSettings):
    """One agent: the settings a session started from it gets (each may be overridden)."""

    description: str | None = Field(default=None, max_length=2000)

    @field_validator("tools", "approvals")
    @classmethod
    def _no_mcp_prefix(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            if name.startswith(MCP_PREFIX):
                raise ValueError(
                    f"{name}: agentlog names an MCP server's tools SERVER__TOOL, without `mcp__`"
                )
        return names


@dataclass(frozen=True)
class Agents:
    """The definitions by name, and each as a session records it."""

    definitions: dict[str, AgentDefinition] = field(default_factory=dict)
    recorded: dict[str, ev.AgentUsed] = field(default_factory=dict)

    def get(self, name: str) -> tuple[AgentDefinition, ev.AgentUsed] | None:
        found = self.definitions.get(name)
        return (found, self.recorded[name]) if found is not None else None


def load(path: Path | None) -> Agents:
    """The agents of a TOML file (none without one); AgentsFileError says what is wrong."""
    if path is None:
        return Agents()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AgentsFileError(f"agents file {path}: {exc}") from exc
    table = data.get("agents", {})
    unknown = sorted(set(data) - {"agents"})
    if unknown or not isinstance(table, dict):
        raise AgentsFileError(
            f"agents file {path}: only [agents.NAME] tables are read, not {unknown or 'agents'}"
        )
    agents = Agents()
    for name, body in table.items():
        if not AGENT_NAME.match(name) or not isinstance(body, dict):
            raise AgentsFileError(
                f"agents file {path}: [agents.{name}] must be a table named {AGENT_NAME.pattern}"
            )
        try:
            agents.definitions[name] = AgentDefinition.model_validate(body)
        except ValidationError as exc:
            wrong = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise AgentsFileError(f"agents file {path}: [agents.{name}] {wrong}") from None
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        agents.recorded[name] = ev.AgentUsed(name=name, sha256=digest, definition=json.loads(canonical))
    return agents


def settings_from(agent: AgentDefinition, request: SessionSettings) -> SessionSettings:
    """The agent's settings with the request's own (those it set, null meaning unset) over
    them; metadata merges."""
    own = {k: v for k, v in request.model_dump(exclude_unset=True).items() if v is not None}
    merged: dict[str, Any] = {**agent.model_dump(exclude_unset=True, exclude={"description"}), **own}
    merged["metadata"] = {**agent.metadata, **request.metadata}
    return SessionSettings(**{k: v for k, v in merged.items() if k in SessionSettings.model_fields})


def public(name: str, agent: AgentDefinition, recorded: ev.AgentUsed) -> dict[str, Any]:
    """An agent as GET /v1/agents lists it."""
    return {"name": name, "sha256": recorded.sha256, **agent.model_dump(exclude_none=True)}


def starting_from(
    agents: Agents, name: str | None, body: SessionSettings
) -> tuple[SessionSettings, dict[str, Any]]:
    """A new session's settings from the named agent and the request, and what its first
    event records of the agent; a name no definition has is a 422 naming the field."""
    if name is None:
        return body, {}
    found = agents.get(name)
    if found is None:
        known = ", ".join(sorted(agents.definitions)) or "none (set AGENTLOG_AGENTS to a file of agents)"
        raise Problem(
            422,
            "Invalid request",
            f"no agent {name!r}; the agents are: {known}",
            errors=[{"field": "agent", "location": "body", "message": f"no agent {name!r}"}],
        )
    definition, recorded = found
    return settings_from(definition, body), {"agent": recorded}
