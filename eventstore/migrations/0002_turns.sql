-- Agent turns: session policies and limits, cache tokens per message, tool calls keyed
-- per session, the effect ledger, expiry and deletion.

ALTER TABLE sessions
    ADD COLUMN policy       text    NOT NULL DEFAULT 'enqueue',
    ADD COLUMN max_steps    integer NOT NULL DEFAULT 25,
    ADD COLUMN token_budget bigint,
    ADD COLUMN ttl_s        integer,
    ADD COLUMN expired_at   timestamptz;

-- A running turn a newer message interrupted (policy interrupt): its late answer is
-- billed but kept out of the transcript.
ALTER TABLE turns ADD COLUMN interrupted boolean NOT NULL DEFAULT false;

ALTER TABLE messages
    ADD COLUMN cache_read_tokens  bigint,
    ADD COLUMN cache_write_tokens bigint;

-- Tool use ids are the model's; unique within a session, not necessarily across sessions.
ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_pkey;
ALTER TABLE tool_calls ADD PRIMARY KEY (session_id, tool_use_id);
DROP INDEX tool_calls_session;

-- The effect ledger: one recorded outcome per effect key (session/turn/step for a model
-- call). Not derived from the log: a rebuild keeps it; deleting a session removes its rows.
CREATE TABLE effects (
    effect_key        text PRIMARY KEY,
    session_id        text        NOT NULL,
    tenant_id         text        NOT NULL,
    kind              text        NOT NULL,
    request_event_id  uuid        NOT NULL,
    outcome           jsonb       NOT NULL,
    attempts          integer     NOT NULL DEFAULT 1,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX effects_session ON effects (session_id);

-- Deleted sessions: their rows are gone everywhere; later copies of their events are skipped.
CREATE TABLE deleted_sessions (
    session_id  text PRIMARY KEY,
    tenant_id   text        NOT NULL,
    deleted_at  timestamptz NOT NULL
);
