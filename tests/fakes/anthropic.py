"""The fake Anthropic Messages API, for tests: it lives in `agentlog.fake_anthropic` (the load
test needs it at run time); this module re-exports it under its old name."""

from agentlog.fake_anthropic import *  # noqa: F403
from agentlog.fake_anthropic import __all__ as __all__
