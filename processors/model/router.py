"""Which model answers a request: the offline model for `agentlog-offline-*`, Claude otherwise."""

from __future__ import annotations

from eventstore import models
from eventstore.settings import Settings
from processors.model.offline import OfflineModel
from processors.model.port import ModelClient, ModelError, ModelRequest, ModelResponse


class ModelRouter:
    """A ModelClient that sends each request to the client for its model name."""

    def __init__(self, offline: ModelClient, claude: ModelClient | None) -> None:
        self.offline = offline
        self.claude = claude

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if models.is_offline(request.model):
            return await self.offline.complete(request)
        if self.claude is None:
            raise ModelError(
                f"model {request.model!r} needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL) to be set;"
                f" the offline model is {models.OFFLINE_MODEL}",
                retryable=False,
            )
        return await self.claude.complete(request)

    async def aclose(self) -> None:
        """Close the HTTP client of the Claude adapter, if there is one."""
        close = getattr(self.claude, "aclose", None)
        if close is not None:
            await close()


def from_settings(settings: Settings) -> ModelRouter:
    """The router a model worker runs with."""
    offline = OfflineModel(settings.offline_model_latency_ms)
    claude: ModelClient | None = None
    if settings.anthropic_api_key or settings.anthropic_base_url:
        from processors.model.claude import ClaudeModel
        from processors.model.retry import RetryPolicy

        claude = ClaudeModel(
            api_key=settings.anthropic_api_key or "unset",
            base_url=settings.anthropic_base_url,
            timeout_s=settings.model_timeout_s,
            stream=settings.model_stream,
            retry=RetryPolicy(
                max_attempts=settings.model_max_attempts,
                base_s=settings.model_retry_base_s,
                deadline_s=settings.model_retry_deadline_s,
            ),
        )
    return ModelRouter(offline, claude)
