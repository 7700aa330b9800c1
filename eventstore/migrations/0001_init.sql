-- The projection of the log, the consumers' positions and the dead letters.

CREATE TABLE events (
    event_id        uuid PRIMARY KEY,
    session_id      text        NOT NULL,
    seq             bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    type            text        NOT NULL,
    turn_id         text,
    step            integer,
    causation_id    uuid,
    correlation_id  text,
    occurred_at     timestamptz NOT NULL,
    schema_version  integer     NOT NULL,
    payload         jsonb       NOT NULL,
    log_epoch       text        NOT NULL,
    log_partition   integer     NOT NULL,
    log_offset      bigint      NOT NULL,
    projected_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, seq)
);
CREATE INDEX events_tenant_type ON events (tenant_id, type);

CREATE TABLE sessions (
    session_id          text PRIMARY KEY,
    tenant_id           text        NOT NULL,
    model               text,
    system_prompt       text,
    metadata            jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'idle',
    pending_turns       integer     NOT NULL DEFAULT 0,
    turn_count          integer     NOT NULL DEFAULT 0,
    input_tokens        bigint      NOT NULL DEFAULT 0,
    output_tokens       bigint      NOT NULL DEFAULT 0,
    cache_read_tokens   bigint      NOT NULL DEFAULT 0,
    cache_write_tokens  bigint      NOT NULL DEFAULT 0,
    cost_usd            numeric(20, 10) NOT NULL DEFAULT 0,
    last_seq            bigint      NOT NULL DEFAULT 0,
    started_at          timestamptz NOT NULL,
    last_activity_at    timestamptz NOT NULL,
    deleted_at          timestamptz
);
CREATE INDEX sessions_tenant_activity ON sessions (tenant_id, last_activity_at);

CREATE TABLE turns (
    turn_id             text PRIMARY KEY,
    session_id          text        NOT NULL,
    tenant_id           text        NOT NULL,
    status              text        NOT NULL,
    idempotency_key     text        NOT NULL,
    user_content        jsonb       NOT NULL,
    steps               integer     NOT NULL DEFAULT 0,
    stop_reason         text,
    error               text,
    input_tokens        bigint      NOT NULL DEFAULT 0,
    output_tokens       bigint      NOT NULL DEFAULT 0,
    cache_read_tokens   bigint      NOT NULL DEFAULT 0,
    cache_write_tokens  bigint      NOT NULL DEFAULT 0,
    cost_usd            numeric(20, 10) NOT NULL DEFAULT 0,
    requested_at        timestamptz NOT NULL,
    started_at          timestamptz,
    completed_at        timestamptz
);
CREATE INDEX turns_session ON turns (session_id, requested_at);

CREATE TABLE messages (
    message_id      uuid PRIMARY KEY,
    session_id      text        NOT NULL,
    tenant_id       text        NOT NULL,
    turn_id         text,
    seq             bigint      NOT NULL,
    role            text        NOT NULL,
    content         jsonb       NOT NULL,
    model           text,
    stop_reason     text,
    input_tokens    bigint,
    output_tokens   bigint,
    cost_usd        numeric(20, 10),
    created_at      timestamptz NOT NULL
);
CREATE INDEX messages_session ON messages (session_id, seq);

CREATE TABLE tool_calls (
    tool_use_id     text PRIMARY KEY,
    session_id      text        NOT NULL,
    tenant_id       text        NOT NULL,
    turn_id         text,
    step            integer,
    name            text        NOT NULL,
    input           jsonb       NOT NULL,
    status          text        NOT NULL,
    result          jsonb,
    is_error        boolean,
    error           text,
    requested_at    timestamptz NOT NULL,
    completed_at    timestamptz,
    duration_ms     integer
);
CREATE INDEX tool_calls_session ON tool_calls (session_id);

-- Next offset to read, per consumer and partition, within one log epoch (the broker's
-- cluster identity): an offset of another epoch is never applied.
CREATE TABLE consumer_offsets (
    consumer        text    NOT NULL,
    log_epoch       text    NOT NULL,
    topic           text    NOT NULL,
    log_partition   integer NOT NULL,
    next_offset     bigint  NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, log_epoch, topic, log_partition)
);

CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    consumer        text    NOT NULL,
    log_epoch       text    NOT NULL,
    topic           text    NOT NULL,
    log_partition   integer NOT NULL,
    log_offset      bigint  NOT NULL,
    record_key      bytea,
    record_value    bytea,
    headers         jsonb   NOT NULL DEFAULT '[]',
    reason          text    NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, log_epoch, topic, log_partition, log_offset)
);
