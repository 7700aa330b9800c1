-- Tools: a ledger entry can be started before its effect runs (writes record their intent
-- first), whole results too large for an event, approvals.

ALTER TABLE effects ALTER COLUMN outcome DROP NOT NULL;
ALTER TABLE effects ADD COLUMN status text NOT NULL DEFAULT 'done';  -- started | done
ALTER TABLE effects ADD COLUMN intent jsonb;                         -- what a write was about to do

-- A tool result over the size limit, whole; the event carries its sha256 and a cut copy.
CREATE TABLE tool_outputs (
    sha256       text        NOT NULL,
    session_id   text        NOT NULL,
    tenant_id    text        NOT NULL,
    tool_use_id  text        NOT NULL,
    content      text        NOT NULL,
    chars        integer     NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, tool_use_id)
);

CREATE TABLE approvals (
    approval_id   text PRIMARY KEY,
    session_id    text        NOT NULL,
    tenant_id     text        NOT NULL,
    turn_id       text,
    step          integer,
    tool_use_id   text        NOT NULL,
    name          text        NOT NULL,
    input         jsonb       NOT NULL,
    status        text        NOT NULL,  -- pending | approved | denied
    reason        text,
    requested_at  timestamptz NOT NULL,
    decided_at    timestamptz
);
CREATE INDEX approvals_session ON approvals (session_id, status);
