"""Payment provider adapters behind one interface (base.PaymentProvider)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.providers.base import PaymentProvider


def build_provider(settings: Settings, name: str | None = None) -> PaymentProvider:
    """The adapter for `name` (default: PAYMENT_PROVIDER), configured from the settings."""
    chosen = name or settings.payment_provider
    if chosen == "sandbox":
        from shared.providers.sandbox import SandboxProvider

        return SandboxProvider(
            settings.sandbox_url,
            [s.get_secret_value() for s in settings.sandbox_webhook_secret],
            timeout_seconds=settings.gateway_timeout_seconds,
        )
    if chosen == "stripe":
        from shared.providers.stripe import StripeProvider

        return StripeProvider.from_settings(settings)
    raise ValueError(f"unknown provider {chosen!r}")
