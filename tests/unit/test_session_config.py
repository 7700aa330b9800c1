"""SessionConfig is the one definition of a session's settings: every setting goes from the
api's request through the event's bytes and the fold to `state.config` without being listed
again; a child takes from its parent exactly what `lineage` says; the event's wire format is
what it was before the settings were one value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.routes.common import SessionSettings, session_config
from eventstore import codec, lineage
from eventstore import events as ev
from eventstore.config import AgentUsed, SessionConfig
from eventstore.mcp import McpServer, McpTool
from eventstore.settings import Settings
from eventstore.state import fold

# Every setting, none at its default (a new setting belongs here: the first test says so).
FULL = SessionConfig(
    model="m",
    system="sys",
    metadata={"k": 1},
    policy="interrupt",
    max_steps=7,
    token_budget=100,
    tools=("Bash", "Task"),
    approvals=("Bash",),
    approve_after_untrusted=("Write",),
    webfetch_allow=("example.com",),
    subagent_mode="http",
    subagent_timeout_s=12.5,
    subagent_attempts=3,
    max_subagents=4,
    max_depth=3,
    ephemeral=True,
    ttl_s=60,
    max_tokens=100,
    context_window=2048,
    agent=AgentUsed(name="a", sha256="0" * 64, definition={"model": "m"}),
    mcp_servers={"srv": McpServer(url="http://127.0.0.1:1/mcp")},
)
LINEAGE: dict[str, Any] = {
    "untrusted": True,
    "depth": 1,
    "parent_session_id": "p",
    "parent_tool_use_id": "toolu_1",
    "history": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "forked_from": "f",
    "forked_at_seq": 9,
    "mcp_tools": [
        McpTool(name="srv__t", server="srv", tool="t", description="d", input_schema={"type": "object"})
    ],
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The record this event was before SessionConfig (captured then): the same bytes now.
RECORD = (
    '{"event_id":"fbaa2404-cedf-5c79-b751-c26e1623e220","session_id":"s-1","tenant_id":"t","turn_id":null,'
    '"step":null,"causation_id":null,"correlation_id":null,"occurred_at":"2026-01-01T00:00:00Z",'
    '"schema_version":2,"type":"session_started","payload":{"model":"m","system":"sys","metadata":{"k":1},'
    '"policy":"interrupt","max_steps":7,"token_budget":100,"tools":["Bash","Task"],"approvals":["Bash"],'
    '"approve_after_untrusted":["Write"],"webfetch_allow":["example.com"],"untrusted":true,'
    '"subagent_mode":"http","subagent_timeout_s":12.5,"subagent_attempts":3,"max_subagents":4,'
    '"max_depth":3,"depth":1,"parent_session_id":"p","parent_tool_use_id":"toolu_1",'
    '"history":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"forked_from":"f",'
    '"forked_at_seq":9,"ephemeral":true,"ttl_s":60,"max_tokens":100,"context_window":2048,'
    '"agent":{"name":"a","sha256":"0000000000000000000000000000000000000000000000000000000000000000",'
    '"definition":{"model":"m"}},"mcp_servers":{"srv":{"command":null,"env":{},'
    '"url":"http://127.0.0.1:1/mcp","headers":{},"approval":null,"tools":{}}},'
    '"mcp_tools":[{"name":"srv__t","server":"srv","tool":"t","description":"d",'
    '"input_schema":{"type":"object"},"effect":"write","approval":true}]}}'
)
DEFAULT_RECORD = (
    '{"model":"m","system":null,"metadata":{},"policy":"enqueue","max_steps":25,"token_budget":null,'
    '"tools":null,"approvals":[],"approve_after_untrusted":[],"webfetch_allow":null,"untrusted":false,'
    '"subagent_mode":"queue","subagent_timeout_s":60.0,"subagent_attempts":2,"max_subagents":16,'
    '"max_depth":2,"depth":0,"parent_session_id":null,"parent_tool_use_id":null,"history":[],'
    '"forked_from":null,"forked_at_seq":null,"ephemeral":false,"ttl_s":null,"max_tokens":4096,'
    '"context_window":null,"agent":null,"mcp_servers":{},"mcp_tools":null}'
)


def started(config: SessionConfig = FULL) -> ev.SessionStarted:
    return ev.session_started("s-1", config, tenant_id="t", at=T0, **LINEAGE)


def test_the_example_sets_every_setting_away_from_its_default() -> None:
    defaults = SessionConfig()
    assert {
        name for name in SessionConfig.model_fields if getattr(FULL, name) == getattr(defaults, name)
    } == set()


def test_every_setting_survives_the_wire_and_the_fold_into_state_config() -> None:
    event = started()
    _, value, headers = codec.encode(event)
    state = fold("s-1", [codec.decode(value, headers)])
    assert state.config == FULL and type(state.config) is SessionConfig
    assert (state.depth, state.parent_session_id, state.forked_from, state.untrusted) == (1, "p", "f", True)
    # What users see of a state (`agentlog state`) has every setting at its top level, as before.
    public = state.public()
    assert {k: public[k] for k in SessionConfig.model_fields} == FULL.model_dump(mode="json")


def test_the_event_is_the_bytes_it_was_before_its_settings_were_one_value() -> None:
    assert codec.encode(started())[1].decode() == RECORD
    default = ev.session_started("s-2", model="m").payload
    assert default.__pydantic_serializer__.to_json(default).decode() == DEFAULT_RECORD


def test_a_child_takes_what_lineage_says_and_nothing_else() -> None:
    parent = fold("p", [ev.session_started("p", FULL, at=T0, untrusted=True)])
    limits = lineage.inherited(parent)
    assert set(lineage.INHERITED) - set(SessionConfig.model_fields) == {"untrusted"}  # no typo'd name
    # As a SubagentRequested records it and the worker reads it back: JSON.
    recorded = ev.SubagentRequestedPayload.model_validate_json(
        ev.SubagentRequestedPayload(
            tool_use_id="t", child_session_id="c", prompt="p", limits=limits
        ).model_dump_json()
    ).limits
    fallback = SessionConfig(model="fallback", max_steps=9, ttl_s=5)
    start = lineage.child_start(recorded, fallback, model="child-model", tools=["Bash"])
    child: SessionConfig = start["config"]
    assert start["untrusted"] is True
    for name in SessionConfig.model_fields:
        if name in lineage.INHERITED:
            assert getattr(child, name) == getattr(FULL, name), name
        elif name not in ("model", "tools"):
            assert getattr(child, name) == getattr(SessionConfig(), name), name  # not the parent's
    assert (child.model, child.tools) == ("child-model", ("Bash",))
    # A rule an older version did not record is the fallback's; what is not inherited is not.
    older = lineage.child_start({"max_depth": 1}, fallback, model="x")["config"]
    assert (older.max_depth, older.max_steps, older.ttl_s) == (1, 9, None)


def test_a_request_becomes_a_config_over_the_defaults_or_a_forks_source() -> None:
    settings = Settings(max_steps=11, approval_tools=["Bash"], session_ttl_s=600)
    assert session_config(SessionSettings(), settings) == settings.session_defaults()
    given = SessionSettings(max_steps=3, ttl_seconds=30, tools=["Read"], approvals=None)
    new = session_config(given, settings)
    assert (new.max_steps, new.ttl_s, new.tools, new.approvals) == (3, 30, ("Read",), ("Bash",))
    # A fork: its source's config, the request's settings over it (null: the server's default).
    fork = session_config(given, settings, FULL)
    assert fork == FULL.model_copy(
        update={"max_steps": 3, "ttl_s": 30, "tools": ("Read",), "approvals": ("Bash",)}
    )


@pytest.mark.parametrize("name", sorted(SessionSettings.model_fields))
def test_every_setting_a_client_may_give_is_a_setting_of_the_config(name: str) -> None:
    assert ("ttl_s" if name == "ttl_seconds" else name) in SessionConfig.model_fields
