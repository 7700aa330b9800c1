"""agentlog's vocabulary and storage: events, the session fold, the Kafka log, the Postgres store."""
