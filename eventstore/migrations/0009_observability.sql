-- Observability. The fleet: every process registers itself with its metrics address and heartbeats, so
-- that `agentlog top` (and service discovery) find the running instances.
CREATE TABLE instances (
    instance_id   text PRIMARY KEY,
    role          text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    metrics_url   text,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_heartbeat ON instances (heartbeat_at);

-- The W3C trace context each event was appended in (the turn's trace), as in the log.
ALTER TABLE events ADD COLUMN traceparent text;
