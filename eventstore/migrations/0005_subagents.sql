-- Sub-agents: each Task call's attempts, and a child session's link to its parent.

ALTER TABLE sessions
    ADD COLUMN parent_session_id  text,
    ADD COLUMN parent_tool_use_id text,
    ADD COLUMN depth              integer NOT NULL DEFAULT 0;
CREATE INDEX sessions_parent ON sessions (parent_session_id) WHERE parent_session_id IS NOT NULL;

CREATE TABLE subagents (
    parent_session_id  text        NOT NULL,
    tool_use_id        text        NOT NULL,
    attempt            integer     NOT NULL,
    child_session_id   text        NOT NULL,
    tenant_id          text        NOT NULL,
    turn_id            text,
    step               integer,
    description        text        NOT NULL DEFAULT '',
    prompt             text        NOT NULL,
    depth              integer     NOT NULL,
    -- running | completed | failed | abandoned (a newer attempt replaced it) | timed_out
    status             text        NOT NULL,
    result             text,
    is_error           boolean,
    requested_at       timestamptz NOT NULL,
    completed_at       timestamptz,
    duration_ms        integer,
    PRIMARY KEY (parent_session_id, tool_use_id, attempt)
);
CREATE INDEX subagents_child ON subagents (child_session_id);
