"""`python -m agentlog` runs the CLI."""

from agentlog.cli import main

main()
