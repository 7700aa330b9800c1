"""agentlog's front door: the CLI and the embedded development stack."""
