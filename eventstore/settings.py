"""Frozen settings, read once from AGENTLOG_* variables at entry points and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable; environment variables are AGENTLOG_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="AGENTLOG_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Tansu refuses idempotent producers; real Kafka should have them on.
    kafka_idempotence: bool = False
    kafka_append_timeout_s: float = Field(default=10.0, gt=0)
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0)
    kafka_max_request_size: int = Field(default=4 * 1024 * 1024, gt=0)
    partitions: int = Field(default=8, ge=1)
    database_url: str = "postgresql://postgres@localhost/postgres"
    default_model: str = "agentlog-offline-1"
    offline_model_latency_ms: int = Field(default=0, ge=0)
    model_concurrency: int = Field(default=256, ge=1)
    projector_batch: int = Field(default=500, ge=1)
    api_host: str = "127.0.0.1"
    api_port: int = 0
    data_dir: Path = Path(".agentlog")
    failpoints: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    instance: str = ""
