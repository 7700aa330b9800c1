-- The api's outbox (issue 17): every record the api acknowledged, kept until the projection
-- has it. The embedded broker's log is in memory: one lost between an append's
-- acknowledgement and its projection would lose a turn the api answered 202. The api inserts
-- a row (committed) before it appends the record; the projector deletes it in the transaction
-- that projects the record (by the record's event-id header); a row still here once the
-- projector has read past every append that could have been in flight is appended again
-- (eventstore/outbox.py). The record is kept as it was appended: sealed, or by reference.
CREATE TABLE api_outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    tenant_id     text NOT NULL,
    session_id    text NOT NULL,
    record_key    bytea,
    record_value  bytea NOT NULL,
    header_names  text[] NOT NULL,
    header_values bytea[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_outbox_created ON api_outbox (created_at);

-- The api writes its tenant's rows and deletes those whose append failed; nothing else.
ALTER TABLE api_outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_tenant ON api_outbox TO agentlog_api
    USING (tenant_id = current_setting('agentlog.tenant', true))
    WITH CHECK (tenant_id = current_setting('agentlog.tenant', true));
GRANT SELECT, INSERT, DELETE ON api_outbox TO agentlog_api;
GRANT USAGE ON SEQUENCE api_outbox_id_seq TO agentlog_api;
