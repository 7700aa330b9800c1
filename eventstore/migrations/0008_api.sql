-- The api: forks (a session starting from another's history), ephemeral runs, and the
-- order of the messages one event brings (a fork's whole history comes with its start).
ALTER TABLE sessions
    ADD COLUMN forked_from    text,
    ADD COLUMN forked_at_seq  bigint,
    ADD COLUMN ephemeral      boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN ord integer NOT NULL DEFAULT 0;
DROP INDEX messages_session;
CREATE INDEX messages_session ON messages (session_id, seq, ord);
CREATE INDEX sessions_tenant_id ON sessions (tenant_id, session_id);
