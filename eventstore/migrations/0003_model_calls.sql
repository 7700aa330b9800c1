-- Every model call, one row per assistant_message event: the transcript (messages) leaves
-- out a late answer to an interrupted turn, but its tokens were paid for.
CREATE VIEW model_calls AS
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
    occurred_at
FROM events
WHERE type = 'assistant_message';
