"""The settings of the provider adapters, for the two services that use them: the gateway_worker calls the provider,
the webhook_receiver verifies what it sends."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from shared.config import SETTINGS_CONFIG, check_url, empty_is_unset, secret_list


class SandboxWebhookSettings(BaseSettings):
    """The secrets the sandbox's webhooks are signed with."""

    model_config = SETTINGS_CONFIG

    sandbox_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr("whsec_sandbox_dev")],
        description="comma-separated list: the receiver accepts a signature made with any of them (rotation); the"
        " sandbox signs with the first",
    )

    @field_validator("sandbox_webhook_secret", mode="before")
    @classmethod
    def _secrets(cls, v: object) -> list[SecretStr]:
        return secret_list(v)


class StripeWebhookSettings(BaseSettings):
    """What verifying Stripe's webhooks needs: their signing secrets (no API key)."""

    model_config = SETTINGS_CONFIG

    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] | None = Field(
        default=None,
        description="comma-separated signing secrets of Stripe's webhook endpoint (`whsec_...`); any verifies"
        " (rotation); unset: the webhook_receiver does not accept Stripe webhooks",
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", description="Stripe's API (a test double's URL in tests)"
    )

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _optional_secrets(cls, v: object) -> list[SecretStr] | None:
        return None if v in (None, "") else secret_list(v)

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base(cls, v: str) -> str:
        return check_url(v, ("http", "https"))


class StripeSettings(StripeWebhookSettings):
    """What calling Stripe's API needs besides: the secret API key."""

    stripe_api_key: SecretStr | None = Field(
        default=None, description="Stripe's secret API key (`sk_...`); required when PAYMENT_PROVIDER is stripe"
    )

    @field_validator("stripe_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return empty_is_unset(v)


class ProviderSettings(SandboxWebhookSettings, StripeSettings):
    """Which provider new payments go to, where the sandbox is, and how long a call may take (the gateway_worker's)."""

    payment_provider: Literal["sandbox", "stripe"] = Field(
        default="sandbox", description="`sandbox` or `stripe`: where new payments go"
    )
    sandbox_url: str = Field(
        default="http://localhost:8090", description="where the gateway_worker reaches the sandbox gateway"
    )
    gateway_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long one call to the payment provider may take"
    )

    @field_validator("sandbox_url")
    @classmethod
    def _sandbox_url(cls, v: str) -> str:
        return check_url(v, ("http", "https"))

    @model_validator(mode="after")
    def _stripe_needs_a_key(self) -> ProviderSettings:
        if self.payment_provider == "stripe" and self.stripe_api_key is None:
            raise ValueError("STRIPE_API_KEY: must be set when PAYMENT_PROVIDER is stripe")
        return self
