-- Cost that is true or visibly unknown: a model no price source knows has cost NULL, and a
-- session's or turn's cost is NULL once one of its calls is (NULL + x is NULL). Every call
-- keeps the price it was charged at, so a later price change never rewrites its cost.
ALTER TABLE sessions ALTER COLUMN cost_usd DROP NOT NULL;
ALTER TABLE turns ALTER COLUMN cost_usd DROP NOT NULL;

CREATE OR REPLACE VIEW model_calls AS
SELECT
    event_id,
    session_id,
    tenant_id,
    turn_id,
    step,
    payload->>'model'                                         AS model,
    payload->>'stop_reason'                                   AS stop_reason,
    (payload->'usage'->>'input_tokens')::bigint                AS input_tokens,
    (payload->'usage'->>'output_tokens')::bigint               AS output_tokens,
    (payload->'usage'->>'cache_read_input_tokens')::bigint     AS cache_read_tokens,
    (payload->'usage'->>'cache_creation_input_tokens')::bigint AS cache_write_tokens,
    (payload->>'cost_usd')::numeric(20, 10)                    AS cost_usd,
    (payload->>'duration_ms')::integer                         AS duration_ms,
    occurred_at,
    -- The price the call was charged at (USD per million tokens) and where it came from;
    -- NULL for an unpriced call, and for calls recorded before prices were stored.
    payload->'price'->>'model'                                 AS price_model,
    payload->'price'->>'source'                                AS price_source,
    (payload->'price'->>'input')::numeric                      AS input_usd_per_mtok,
    (payload->'price'->>'output')::numeric                     AS output_usd_per_mtok,
    (payload->'price'->>'cache_write')::numeric                AS cache_write_usd_per_mtok,
    (payload->'price'->>'cache_read')::numeric                 AS cache_read_usd_per_mtok
FROM events
WHERE type = 'assistant_message';
ALTER VIEW model_calls SET (security_invoker = true);
