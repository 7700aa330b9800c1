"""Frozen settings, read once from AGENTLOG_* variables at entry points and passed down."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from eventstore import models
from eventstore.config import SessionConfig
from eventstore.mcp import McpServer, check_names

# Settings of the split by hand (before consumer groups); refused when set.
REMOVED = frozenset(
    f"AGENTLOG_{role}_{part}"
    for role in ("TOOL_EXECUTOR", "MODEL_WORKER", "SUBAGENT_WORKER")
    for part in ("INDEX", "COUNT")
)


class Settings(BaseSettings):
    """Everything configurable; environment variables are AGENTLOG_<FIELD>."""

    # Errors never echo a value: settings hold tokens, keys and database passwords.
    model_config = SettingsConfigDict(
        env_prefix="AGENTLOG_", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Tansu refuses idempotent producers; real Kafka should have them on.
    kafka_idempotence: bool = False
    kafka_append_timeout_s: float = Field(default=10.0, gt=0)
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0)
    # The fetch wait of a consumer that has had no record for a few seconds (`log.FetchPace`):
    # Tansu holds each fetch for its whole wait, data or not, so the short wait above is a
    # request every 10 ms per consumer — most of an idle stack's CPU. The first record after
    # a quiet spell waits up to this long per hop; set it to the short wait to turn this off.
    # Real Kafka answers a fetch as soon as data arrives: 500 for both costs nothing there.
    kafka_idle_fetch_max_wait_ms: int = Field(default=500, ge=0)
    kafka_max_request_size: int = Field(default=4 * 1024 * 1024, gt=0)
    # How often the projector looks for records the api acknowledged that no log holds any more
    # (eventstore/outbox.py: a broker lost before they were projected); 0 turns it off.
    outbox_sweep_s: float = Field(default=5.0, ge=0)
    # Consumer groups (processors/groups). A dead replica's partitions move after the session
    # timeout. Tansu completes a group's first join only after about half the session/rebalance
    # timeout, never under 5 s, so 10 s each is as fast as it gets there. Real Kafka: session
    # 45000, rebalance 60000, heartbeat 3000 (its first join waits group.initial.rebalance.delay.ms).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_rebalance_timeout_ms: int = Field(default=10_000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    # A member that does not poll this long leaves the group (aiokafka's default).
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    # Static membership: each replica joins as `<group>.<instance>`, so a restart that comes back
    # within the session timeout keeps its partitions without a rebalance. Needs an `instance`
    # that survives restarts (a StatefulSet pod name), never the default host-and-pid one.
    kafka_static_membership: bool = False
    # Consume in Kafka consumer groups (processors/groups), so that replicas of a role share
    # its partitions and take over a dead one's. Only the projector does so far (issue 13);
    # off, each process reads every partition by hand (one replica per role).
    consumer_groups: bool = False
    partitions: int = Field(default=8, ge=1)
    # Replicas of each partition of the topics agentlog makes (ensure_topics): 1 for a single
    # broker, 3 for a production cluster (deploy/k8s; the broker's min.insync.replicas is 2).
    kafka_replication_factor: int = Field(default=1, ge=1)
    database_url: str = "postgresql://postgres@localhost/postgres"
    # The model of a session that names none; empty: the offline model without
    # ANTHROPIC_API_KEY, a current Claude model (eventstore.models.CLAUDE_DEFAULT) with it.
    default_model: str = ""
    offline_model_latency_ms: int = Field(default=0, ge=0)
    model_concurrency: int = Field(default=256, ge=1)
    tool_concurrency: int = Field(default=64, ge=1)
    # A tool run is stopped after this (Bash has its own, shorter limit inside it).
    tool_timeout_s: float = Field(default=150.0, gt=0)
    # A requested tool with no result this long after it was asked for (its executor lost for
    # good) is answered by the reactor with an "outcome unknown" error result.
    tool_deadline_s: float = Field(default=900.0, gt=0)
    # Workspaces: one directory per session under this root, which every tool executor
    # mounts (a ReadWriteMany volume on Kubernetes): whichever executor owns a session's
    # partition runs its next call, one at a time across executors.
    workspace_root: Path = Path(".agentlog/workspaces")
    # Users' tools: modules whose `@tool` functions every worker loads (comma-separated in
    # AGENTLOG_TOOL_MODULES), besides those of the `agentlog.tools` entry points.
    tool_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A TOML file of agent definitions (name -> model, system prompt, tools, limits).
    agents: Path | None = None
    # A tool result longer than this is stored whole in Postgres; the model sees it cut.
    tool_result_max_chars: int = Field(default=30_000, ge=100)
    # Secrets in tool results are replaced by [REDACTED:<type>] before anything records them
    # (processors/tools/redact.py): the log is immutable, a leaked key is leaked for good.
    redact_secrets: bool = True
    # Envelope encryption (eventstore/vault.py): with a master key (base64 of 32 bytes), each
    # session's events are sealed in the log with a data key of its own, kept in Postgres
    # wrapped by this key; deleting the session destroys its data key. Keys that wrapped data
    # keys before a rotation (`agentlog keys rotate`) go in previous_master_keys, comma-separated.
    master_key: SecretStr | None = None
    previous_master_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Session data keys each process keeps unwrapped in memory (least recently used dropped).
    key_cache_sessions: int = Field(default=10_000, ge=1)
    # An event whose record is over kafka_max_request_size is kept in Postgres (payload_blobs,
    # by its sha256) and the log holds a reference; over this, it is refused (413 at the api).
    payload_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # MCP servers whose tools every session is offered: JSON mapping a name to
    # {"command": [...], "env": {...}} (stdio) or {"url": ...} (streamable HTTP); see docs/tools.md.
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)
    # Whether a session may name its own stdio servers (`mcp_servers` with a `command`): that
    # runs a program of the caller's choosing on the tool executor, outside the Bash sandbox.
    mcp_session_commands: bool = False
    # How long a listing of a server's tools is reused for new sessions.
    mcp_list_ttl_s: float = Field(default=60.0, ge=0)
    # Tools whose calls wait for a human's approval (a session may name its own).
    approval_tools: list[str] = Field(default_factory=list)
    # Tools whose calls wait for approval once untrusted content (a WebFetch or MCP result)
    # entered the session (a session may name its own).
    approve_after_untrusted: list[str] = Field(default_factory=list)
    # Hosts (or *.domain) WebFetch may reach without approval; set, a fetch elsewhere waits for
    # a human. A session may narrow it. Empty: no allowlist. (Not webfetch_allow_hosts, below,
    # which lets WebFetch reach private addresses at all.)
    webfetch_allow: list[str] = Field(default_factory=list)
    # Bash: bubblewrap sandbox, no network, the workspace the only writable place.
    bash_timeout_s: float = Field(default=120.0, gt=0)
    bash_max_processes: int = Field(default=256, ge=1)
    bash_max_output_bytes: int = Field(default=100_000, ge=1000)
    # Address space per process (RLIMIT_AS); the sandbox's /tmp is a 256 MiB tmpfs.
    bash_max_memory_bytes: int = Field(default=4 * 1024**3, ge=64 * 1024**2)
    bash_allow_unsandboxed: bool = False
    # Each command in a cgroup of its own (memory, processes and CPU for all its processes
    # together): "auto" finds where this process may make them, "off" never, or the path of a
    # cgroup v2 directory delegated to the executor. Without one, the per-process limits above.
    bash_cgroup: str = "auto"
    bash_cpus: float = Field(default=1.0, gt=0)
    # Commands running at once in one executor; more wait their turn.
    bash_concurrency: int = Field(default=8, ge=1)
    # A workspace's disk quota: Bash reports a command that leaves it over as an error and no
    # file grows past it (RLIMIT_FSIZE); Write and Edit refuse what would pass it.
    workspace_max_bytes: int = Field(default=1024**3, ge=1024**2)
    # Sub-agents (the Task tool): queue (sub-agent workers) or http (POST /v1/subagent/run).
    subagent_mode: Literal["queue", "http"] = "queue"
    subagent_timeout_s: float = Field(default=60.0, gt=0)
    subagent_attempts: int = Field(default=2, ge=1)
    subagent_max_depth: int = Field(default=2, ge=0)
    max_subagents: int = Field(default=16, ge=0)
    # Children running at once, admitted per sub-agent worker replica (the one owning the
    # parent's partition admits; the one owning the child's reports its end).
    subagent_concurrency: int = Field(default=5, ge=1)
    # Where the api answers, for the Task tool's HTTP model, and how the executor calls it:
    # with the service token (the api runs the child for the parent session's tenant) or else
    # with one tenant's token. The embedded stack sets the url and the service token.
    api_url: str = ""
    api_token: str = ""
    # A credential for agentlog's own processes: the api lets it start a sub-agent of any
    # session, for that session's tenant, and nothing else (403). Keep it to the cluster.
    service_token: str = ""
    # WebFetch: private, loopback and link-local addresses are refused unless allowed here.
    webfetch_allow_hosts: list[str] = Field(default_factory=list)
    webfetch_timeout_s: float = Field(default=30.0, gt=0)
    webfetch_max_bytes: int = Field(default=2_000_000, ge=1000)
    drain_timeout_s: float = Field(default=5.0, ge=0)
    # Session defaults (a session may set its own when it starts).
    max_steps: int = Field(default=25, ge=1)
    session_ttl_s: int | None = Field(default=None, ge=1, le=2**31 - 1)  # sessions.ttl_s is an integer
    max_tokens: int = Field(default=4096, ge=1)
    expiry_check_s: float = Field(default=5.0, gt=0)
    # Claude through the anthropic SDK: models not named agentlog-offline-* go there.
    anthropic_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    model_timeout_s: float = Field(default=600.0, gt=0)
    # A model call holds a lease in the ledger, renewed every third of it while it runs: a
    # replica taking over waits for it to run out, so two never both call for one step.
    model_lease_s: float = Field(default=10.0, gt=0)
    # A turn whose model call has no answer this long after it was asked (no worker serving
    # it, for whatever reason) fails with that reason: a session never waits forever.
    model_deadline_s: float = Field(default=1800.0, gt=0)
    # A model call no worker has taken (no row in the ledger: no lease, no outcome) this long
    # after it was asked is asked for once more (the ledger makes that safe): a request that a
    # worker passed over, for whatever reason, is served well before the deadline.
    model_unclaimed_s: float = Field(default=20.0, gt=0)
    model_stream: bool = True
    model_max_attempts: int = Field(default=4, ge=1)
    model_retry_base_s: float = Field(default=0.5, ge=0)
    model_retry_deadline_s: float = Field(default=300.0, gt=0)
    # Prices come from the genai-prices package (upgrade it for new prices); these override
    # or add models, USD per million tokens: {"model": [input, output, cache_write, cache_read]}.
    prices: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] = Field(default_factory=dict)
    projector_batch: int = Field(default=500, ge=1)
    # Each folding worker keeps at most this many session states, and about this many bytes
    # of them; a state beyond either is dropped once projected, and loaded again when needed.
    session_cache_sessions: int = Field(default=10_000, ge=1)
    session_cache_bytes: int = Field(default=512 * 1024**2, ge=1024**2)
    # Bearer tokens: `token:tenant,…` (or the api_tokens table). Without a token the api
    # answers 401, unless auth_required is off (local development: the `default` tenant).
    api_tokens: str = ""
    auth_required: bool = True
    # Per-tenant limits (eventstore/limits.py), answered 429 with Retry-After: requests per
    # second and burst (`20/40`; each api process counts its own), turns queued or running at
    # once, model tokens per UTC day; AGENTLOG_TENANT_LIMITS sets them per tenant
    # (`acme:rate=5/10,turns=4,tokens=1000000;big:rate=100/200`). Empty or 0: no limit.
    tenant_rate: str = ""
    tenant_max_turns: int | None = Field(default=None, ge=0)
    tenant_tokens_per_day: int | None = Field(default=None, ge=0)
    tenant_limits: str = ""
    # Tenants whose tokens may see the fleet (GET /v1/fleet, the console's fleet page): its
    # figures are every tenant's together. Comma-separated in AGENTLOG_OPERATOR_TENANTS.
    operator_tenants: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["default"])
    # Sessions of POST /v1/agent/run are deleted this long after they go idle.
    agent_run_ttl_s: int = Field(default=300, ge=1, le=2**31 - 1)
    # Text deltas of streaming model calls, pushed to SSE clients (through Postgres NOTIFY).
    stream_deltas: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = 0
    data_dir: Path = Path(".agentlog")
    failpoints: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # This process's identity in the fleet (default: role, host and pid).
    instance: str = ""
    # Every process serves Prometheus text at http://metrics_host:metrics_port/metrics
    # (port 0: a free one) and registers itself in the `instances` table, heartbeating.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0)
    metrics_enabled: bool = True
    heartbeat_s: float = Field(default=5.0, gt=0)
    # Traces go to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318); empty: not exported.
    otlp_endpoint: str = ""

    @property
    def session_model(self) -> str:
        """The model a new session gets when it names none."""
        return models.default_model(self.default_model, self.anthropic_api_key)

    def session_defaults(self) -> SessionConfig:
        """The config of a new session where its request (or its parent) gives no setting:
        the deployment's defaults."""
        return SessionConfig(
            model=self.session_model,
            max_steps=self.max_steps,
            approvals=tuple(self.approval_tools),
            approve_after_untrusted=tuple(self.approve_after_untrusted),
            webfetch_allow=tuple(self.webfetch_allow) or None,
            subagent_mode=self.subagent_mode,
            subagent_timeout_s=self.subagent_timeout_s,
            subagent_attempts=self.subagent_attempts,
            max_subagents=self.max_subagents,
            max_depth=self.subagent_max_depth,
            ttl_s=self.session_ttl_s,
            max_tokens=self.max_tokens,
        )

    @field_validator("api_tokens")
    @classmethod
    def _tokens_name_valid_tenants(cls, spec: str) -> str:
        """Each `token:tenant` is well formed and names a valid tenant id, checked once at start."""
        from eventstore.tenants import parse_tokens

        parse_tokens(spec)
        return spec

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, servers: dict[str, McpServer]) -> dict[str, McpServer]:
        check_names(servers)
        return servers

    @field_validator("master_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("previous_master_keys", mode="before")
    @classmethod
    def _keys_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("master_key", "previous_master_keys")
    @classmethod
    def _master_keys_well_formed(cls, value: Any) -> Any:
        """Each master key is the base64 of 32 bytes (AES-256), checked once at start."""
        from eventstore.vault import master_key_bytes

        for key in value if isinstance(value, list) else [value]:
            if key is not None:
                master_key_bytes(key.get_secret_value())
        return value

    @field_validator("tool_modules", "operator_tenants", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Group timeouts must agree; a split by hand is gone, and saying so beats ignoring it."""
        gone = sorted(name for name in os.environ if name in REMOVED)
        if gone:
            raise ValueError(
                f"{', '.join(gone)}: replicas no longer split partitions by hand; run any number of"
                " them with AGENTLOG_CONSUMER_GROUPS=true and they share the partitions"
            )
        from eventstore.limits import from_settings

        from_settings(self.tenant_rate, self.tenant_max_turns, self.tenant_tokens_per_day, self.tenant_limits)
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                "kafka_heartbeat_interval_ms must be at most a third of kafka_session_timeout_ms"
            )
        if self.kafka_static_membership and not self.instance:
            raise ValueError(
                "kafka_static_membership needs an instance that survives restarts (AGENTLOG_INSTANCE)"
            )
        return self
