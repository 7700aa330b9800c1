-- API tokens may expire: past expires_at a token answers 401, as a revoked one does.
-- NULL is a token without expiry (every token issued before this migration).
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
