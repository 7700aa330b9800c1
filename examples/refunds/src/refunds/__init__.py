"""An example of users' own agentlog tools: refunds through a payment API that honours
idempotency keys, exactly once end to end."""
