"""The Python client of the HTTP api (v1): `AsyncAgentlog` over `httpx.AsyncClient`, `Agentlog` over
`httpx.Client`, the same methods on both, answers typed with the api's own models (`api.models`).
Each call is written once in `ops`; the errors are drawn in `errors`."""

from agentlog.client.aio import AsyncAgentlog
from agentlog.client.errors import AgentlogError, ApiUnreachable, FieldError, NotConfigured, problem_error
from agentlog.client.sse import SSEMessage, SSEParser
from agentlog.client.stack import StackInfo, from_stack, locate
from agentlog.client.sync import Agentlog

__all__ = [
    "Agentlog",
    "AgentlogError",
    "ApiUnreachable",
    "AsyncAgentlog",
    "FieldError",
    "NotConfigured",
    "SSEMessage",
    "SSEParser",
    "StackInfo",
    "from_stack",
    "locate",
    "problem_error",
]
