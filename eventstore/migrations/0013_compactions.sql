-- Sessions longer than the context window (issue 18, part 3). A session may set its window
-- (tokens; NULL: the model's). A compaction is an event (`context_compacted`): the summary
-- the model is sent in place of the older messages, and up to where tool results are
-- cleared. Every message stays in `messages`; these views show what the model saw instead.
ALTER TABLE sessions ADD COLUMN context_window integer;

-- Every model call, the summary calls of compactions included (`kind`), so that a session's
-- cost is still the sum of its calls.
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
    payload->'price'->>'model'                                 AS price_model,
    payload->'price'->>'source'                                AS price_source,
    (payload->'price'->>'input')::numeric                      AS input_usd_per_mtok,
    (payload->'price'->>'output')::numeric                     AS output_usd_per_mtok,
    (payload->'price'->>'cache_write')::numeric                AS cache_write_usd_per_mtok,
    (payload->'price'->>'cache_read')::numeric                 AS cache_read_usd_per_mtok,
    CASE type WHEN 'assistant_message' THEN 'message' ELSE 'compaction' END AS kind
FROM events
WHERE type = 'assistant_message'
   OR (type = 'context_compacted' AND payload->>'model' IS NOT NULL);
ALTER VIEW model_calls SET (security_invoker = true);

-- One row per compaction: the model is sent `summary` in place of the session's first
-- `messages_summarised` messages (in `messages` order), and a placeholder for the content of
-- the tool results among its first `cleared_before` messages.
CREATE VIEW compactions AS
SELECT
    event_id,
    session_id,
    tenant_id,
    turn_id,
    step,
    (payload->>'through')::integer                             AS messages_summarised,
    (payload->>'clear_before')::integer                        AS cleared_before,
    payload->>'summary'                                        AS summary,
    (payload->>'tokens_before')::integer                       AS tokens_before,
    (payload->>'tokens_after')::integer                        AS tokens_after,
    payload->>'model'                                          AS model,
    (payload->>'cost_usd')::numeric(20, 10)                    AS cost_usd,
    occurred_at
FROM events
WHERE type = 'context_compacted';
ALTER VIEW compactions SET (security_invoker = true);
GRANT SELECT ON compactions TO agentlog_analyst;
