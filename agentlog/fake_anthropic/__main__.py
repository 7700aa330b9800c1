"""`python -m agentlog.fake_anthropic`: serve the fake Anthropic API until SIGTERM or Ctrl-C."""

from agentlog.fake_anthropic.server import main

main()
