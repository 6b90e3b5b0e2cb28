"""The sandbox gateway's settings: where it listens and is reached, its webhooks, and its test controls."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from shared.config import CommonSettings, empty_is_unset, http_url
from shared.providers.settings import SandboxWebhookSettings


class SandboxGatewaySettings(CommonSettings, SandboxWebhookSettings):
    """What the sandbox gateway reads from the environment, and nothing else."""

    sandbox_port: int = Field(default=8090, ge=0, le=65535, description="HTTP port of the sandbox gateway")
    # The sandbox takes fault-injection orders and test cards: it listens on loopback unless opened on purpose.
    sandbox_host: str = Field(
        default="127.0.0.1",
        description="the address the sandbox listens on: loopback, whatever `HTTP_HOST` says, unless set (`0.0.0.0`"
        " in compose)",
    )
    sandbox_public_url: str | None = Field(
        default=None,
        description="the sandbox's address as a customer's browser sees it (checkout URLs); unset:"
        " `http://localhost:$SANDBOX_PORT`",
    )
    sandbox_webhook_url: str = Field(
        default="http://localhost:8081/webhooks/sandbox", description="where the sandbox delivers webhooks"
    )
    sandbox_autopay: Literal["succeed", "fail"] | None = Field(
        default=None,
        description="`succeed` or `fail`: the sandbox completes every new intent by itself right after creating it"
        " (benchmarks, headless demos); unset: a customer pays on the hosted page",
    )
    sandbox_webhook_retry_base_seconds: float = Field(
        default=1.0, gt=0, description="first webhook retry delay (doubles each attempt, capped at 60 s)"
    )
    sandbox_webhook_max_attempts: int = Field(
        default=10, ge=8, description="attempts of one webhook delivery before the sandbox gives up on it"
    )
    # Bearer token of /_sandbox/* (fault injection); unset, those endpoints are refused.
    sandbox_admin_token: SecretStr | None = Field(
        default=None,
        description="the Bearer token of the sandbox's `/_sandbox/*` endpoints (fault injection); unset, they answer"
        " 403",
    )
    sandbox_data_dir: str | None = Field(
        default=None,
        description="where the sandbox keeps its intents and webhook schedule across restarts (a SQLite file in"
        " this directory); unset: in memory",
    )

    @field_validator("sandbox_public_url", "sandbox_webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return http_url(v)

    @field_validator("sandbox_autopay", "sandbox_admin_token", "sandbox_data_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return empty_is_unset(v)

    @property
    def sandbox_checkout_base(self) -> str:
        """The base of the hosted payment pages' URLs, as customers' browsers reach them."""
        return (self.sandbox_public_url or f"http://localhost:{self.sandbox_port}").rstrip("/")
