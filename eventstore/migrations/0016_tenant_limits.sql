-- Per-tenant limits (api/quotas.py): a tenant's open turns are counted, and its model tokens
-- since UTC midnight summed, when it posts a new turn; these keep both to an index scan.
CREATE INDEX IF NOT EXISTS turns_open_by_tenant ON turns (tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS turns_ended_by_tenant ON turns (tenant_id, completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_model_calls_by_tenant ON events (tenant_id, occurred_at)
    WHERE type = 'assistant_message';
