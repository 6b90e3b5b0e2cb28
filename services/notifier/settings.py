"""The notifier's settings: its port, and how merchant webhooks are delivered, retried and given up on."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import BrokerSettings, DatabaseSettings, seconds_list
from shared.endpoint_urls import EndpointUrlSettings
from shared.webhook_secrets import SecretsAtRestSettings

DEFAULT_WEBHOOK_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class NotifierSettings(DatabaseSettings, BrokerSettings, SecretsAtRestSettings, EndpointUrlSettings):
    """What the notifier reads from the environment, and nothing else."""

    notifier_port: int = Field(
        default=8084, ge=0, le=65535, description="HTTP port of the notifier (health and metrics)"
    )
    webhook_retry_schedule_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        description="the wait before each delivery attempt of a merchant webhook (±10 % jitter); one attempt per entry",
    )
    webhook_disable_after_seconds: float = Field(
        default=432000,
        gt=0,
        description="an endpoint failing for longer than this is disabled (event `webhook_endpoint.disabled`)",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="one delivery attempt gets no longer than this for its answer"
    )

    @field_validator("webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _retry_schedule(cls, v: object) -> list[float]:
        return seconds_list(v)
