"""The webhook_receiver's settings: its port and the providers' webhook signing secrets (no API key)."""

from __future__ import annotations

from pydantic import Field

from shared.config import BrokerSettings
from shared.providers.settings import SandboxWebhookSettings, StripeWebhookSettings


class WebhookReceiverSettings(BrokerSettings, SandboxWebhookSettings, StripeWebhookSettings):
    """What the webhook_receiver reads from the environment, and nothing else."""

    webhook_port: int = Field(
        default=8081, ge=0, le=65535, description="HTTP port of the webhook_receiver (providers' webhooks)"
    )
