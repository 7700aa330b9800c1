-- The api's role (0015) reads a tenant's model tokens of the day for its limits (0016,
-- api/quotas.py) from the model_calls view: a security_invoker view (0007), so row-level
-- security on the events beneath it binds the api as it binds the analyst.
GRANT SELECT ON model_calls TO agentlog_api;
