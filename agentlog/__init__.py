"""agentlog's front door: the CLI, the embedded development stack, and the public api for
users' own tools: `from agentlog import tool, ToolContext`."""

from processors.tools.errors import ToolError
from processors.tools.function import tool
from processors.tools.registry import ToolContext, ToolOutput

__all__ = ["ToolContext", "ToolError", "ToolOutput", "tool"]
