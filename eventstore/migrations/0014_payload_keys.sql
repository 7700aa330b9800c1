-- Deletion that deletes (issue 16) and payloads larger than a log record (issue 17).
--
-- Each session's data key, wrapped by a master key (AES-256-GCM, eventstore/vault.py). Deleting
-- the session destroys it: the row stays with wrapped_key NULL, so that no writer makes the
-- session a new key and its records in the log stay unreadable for good.
CREATE TABLE session_keys (
    session_id    text PRIMARY KEY,
    tenant_id     text NOT NULL,
    master_key_id text,
    wrapped_key   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz,
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);

-- The master keys that have wrapped data keys, by id (a digest, never the key): a process
-- started with another key refuses to start rather than fail on every record.
CREATE TABLE master_keys (
    key_id     text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A record too large for the log: its bytes (sealed with the session's key when encryption
-- is on) under their sha256; the log holds a reference. Removed with the session.
CREATE TABLE payload_blobs (
    sha256       text PRIMARY KEY,
    session_id   text NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payload_blobs_session ON payload_blobs (session_id);
