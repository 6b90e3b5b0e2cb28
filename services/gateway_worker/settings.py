"""The gateway_worker's settings: its port, the provider and its secrets, retries, and the shops' names."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import BrokerSettings
from shared.providers.settings import ProviderSettings


class GatewayWorkerSettings(BrokerSettings, ProviderSettings):
    """What the gateway_worker reads from the environment, and nothing else."""

    gateway_worker_port: int = Field(
        default=8083, ge=0, le=65535, description="HTTP port of the gateway_worker (health and metrics)"
    )
    # merchant_id -> the shop's name as customers know it, shown on the hosted payment page.
    merchant_names: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"demo": "Paystream demo shop"},
        description="comma-separated `merchant_id:name` pairs: the shop's name on the hosted payment page (a"
        " merchant without one is shown by its id)",
    )
    gateway_max_attempts: int = Field(
        default=5, ge=1, description="intent creation attempts on transient provider errors"
    )
    gateway_retry_base_seconds: float = Field(
        default=4.0, gt=0, description="the first backoff between those attempts (doubling, ±20 % jitter)"
    )

    @field_validator("merchant_names", mode="before")
    @classmethod
    def _merchant_names(cls, v: object) -> object:
        """`merchant_id:Shop name,...` → {merchant_id: name}; an empty value names nobody."""
        if isinstance(v, dict):
            return v
        names: dict[str, str] = {}
        for pair in filter(str.strip, str(v).split(",")):
            merchant, sep, name = pair.strip().partition(":")
            if not sep or not merchant.strip() or not name.strip():
                raise ValueError("expected comma-separated merchant_id:name pairs")
            if len(name.strip()) > 100:
                raise ValueError(f"the name of {merchant.strip()!r} is longer than 100 characters")
            names[merchant.strip()] = name.strip()
        return names
