"""The intake API's settings: its port, the merchants' API keys, and its payments' and endpoints' rules."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.config import BrokerSettings, DatabaseSettings
from shared.endpoint_urls import EndpointUrlSettings
from shared.webhook_secrets import SecretsAtRestSettings


class IntakeSettings(DatabaseSettings, BrokerSettings, SecretsAtRestSettings, EndpointUrlSettings):
    """What the intake API reads from the environment, and nothing else."""

    intake_port: int = Field(default=8080, ge=0, le=65535, description="HTTP port of the intake API")
    intake_api_keys: Annotated[list[tuple[str, SecretStr]], NoDecode] = Field(
        default_factory=lambda: [("demo", SecretStr("sk_test_demo"))],
        description="comma-separated `merchant_id:api_key` pairs; a merchant may hold several keys (rotation)",
    )
    payment_ttl_seconds: int = Field(
        default=1800, gt=0, description="a payment still PENDING this long after creation is expired"
    )
    idempotency_retention_hours: float = Field(
        default=24,
        ge=24,
        description="how long the intake keeps its own idempotency records (the ledger keeps the key for good)",
    )
    webhook_secret_grace_seconds: int = Field(
        default=86400,
        ge=0,
        description="after `rotate_secret`, how long the old secret keeps signing beside the new one",
    )

    @field_validator("intake_api_keys", mode="before")
    @classmethod
    def _api_keys(cls, v: object) -> object:
        """`merchant_id:api_key,...` → [(merchant_id, key)]; a merchant may hold several keys (rotation)."""
        if isinstance(v, list):
            return v
        pairs: list[tuple[str, SecretStr]] = []
        seen: set[str] = set()
        for pair in str(v).split(","):
            merchant, sep, key = pair.strip().partition(":")
            if not sep or not merchant.strip() or not key.strip():
                raise ValueError("expected comma-separated merchant_id:api_key pairs")
            if key.strip() in seen:
                raise ValueError("an API key is listed twice")
            seen.add(key.strip())
            pairs.append((merchant.strip(), SecretStr(key.strip())))
        return pairs

    @property
    def merchants_by_key(self) -> dict[str, str]:
        """The merchant each API key authenticates."""
        return {key.get_secret_value(): merchant for merchant, key in self.intake_api_keys}
