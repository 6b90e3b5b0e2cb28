"""The demo shop's settings: where it listens and is reached, where the intake is, and its merchant's secrets."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from shared.config import CommonSettings, IntakeClientSettings, empty_is_unset, http_url

# The demo merchant's API key of the intake's default INTAKE_API_KEYS: the shop works out of the box.
DEMO_API_KEY = "sk_test_demo"


class StorefrontSettings(CommonSettings, IntakeClientSettings):
    """What the storefront reads from the environment, and nothing else: it never sees the intake's list of keys."""

    storefront_port: int = Field(
        default=8000, ge=0, le=65535, description="HTTP port of the storefront (the demo shop)"
    )
    storefront_public_url: str | None = Field(
        default=None, description="the shop's own public address; unset: `http://localhost:$STOREFRONT_PORT`"
    )
    storefront_api_key: SecretStr | None = Field(
        default=None,
        description="the shop's API key at the intake; unset: the demo merchant's development key (`sk_test_demo`)",
    )
    storefront_webhook_url: str | None = Field(
        default=None,
        description="where the demo shop receives Paystream's webhooks; unset:"
        " `$STOREFRONT_PUBLIC_URL/webhooks/paystream`",
    )
    storefront_webhook_secret: SecretStr | None = Field(
        default=None,
        description="with a secret set, the shop uses that endpoint's secret instead of registering an endpoint at"
        " start",
    )

    @field_validator("storefront_public_url", "storefront_webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return http_url(v)

    @field_validator("storefront_api_key", "storefront_webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return empty_is_unset(v)

    @property
    def storefront_base_url(self) -> str:
        """The shop's own address, as customers' browsers reach it."""
        return (self.storefront_public_url or f"http://localhost:{self.storefront_port}").rstrip("/")

    @property
    def storefront_key(self) -> str:
        """The API key the shop authenticates with at the intake."""
        key = self.storefront_api_key
        return key.get_secret_value() if key is not None else DEMO_API_KEY
