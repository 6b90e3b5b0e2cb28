"""The ledger's settings: its port, its sweeps, and how long it waits for a payment it does not know yet."""

from __future__ import annotations

from pydantic import Field

from shared.config import BrokerSettings, DatabaseSettings


class LedgerSettings(DatabaseSettings, BrokerSettings):
    """What the ledger reads from the environment, and nothing else."""

    ledger_port: int = Field(default=8082, ge=0, le=65535, description="HTTP port of the ledger (health and metrics)")
    expiry_sweep_interval_seconds: float = Field(
        default=5, gt=0, description="how often the ledger looks for payments past their TTL"
    )
    authorization_ttl_seconds: int = Field(
        default=604800,
        gt=0,
        description="how long a manual-capture payment stays AUTHORIZED before its hold is voided at the provider and"
        " it becomes EXPIRED (`authorization_expired`): 7 days, as card networks hold",
    )
    reconcile_after_seconds: int = Field(
        default=600,
        gt=0,
        description="a PENDING payment with an intent and no outcome this old is looked up at the provider",
    )
    reconcile_interval_seconds: int = Field(
        default=300, gt=0, description="how often, at most, one payment is looked up at the provider"
    )
    ledger_retry_attempts: int = Field(
        default=8,
        ge=1,
        description="how often an event for a payment the ledger has not seen yet is tried before the DLQ",
    )
    ledger_retry_base_seconds: float = Field(
        default=1.0, gt=0, description="the first retry's delay of such an event (doubling, ±20 % jitter)"
    )
