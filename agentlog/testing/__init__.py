"""agentlog's testing kit: test your own tools and agents the way agentlog tests its own.

The pytest plugin (`agentlog.testing.plugin`, loaded through the `pytest11` entry point
once agentlog is installed with its `testing` extra) gives the fixtures; the stack they
yield is `agentlog.testing.stack.Stack`. See docs/tools.md, "Testing a tool".
"""
