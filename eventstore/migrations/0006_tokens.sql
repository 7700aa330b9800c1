-- API tokens: a bearer token maps to a tenant. Only the token's sha256 is stored.
CREATE TABLE api_tokens (
    token_sha256  text PRIMARY KEY,
    tenant_id     text        NOT NULL,
    name          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);
