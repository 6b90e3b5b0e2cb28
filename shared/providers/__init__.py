"""Payment provider adapters behind one interface (base.PaymentProvider)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.providers.base import PaymentProvider
    from shared.providers.sandbox import SandboxProvider
    from shared.providers.settings import ProviderSettings, SandboxWebhookSettings


def sandbox_provider(
    settings: SandboxWebhookSettings, url: str = "", *, timeout_seconds: float = 10.0
) -> SandboxProvider:
    """The sandbox's adapter: the secrets its webhooks are signed with, and its URL (none: the webhook half only,
    verifying and parsing, as the webhook_receiver uses it)."""
    from shared.providers.sandbox import SandboxProvider

    secrets = [s.get_secret_value() for s in settings.sandbox_webhook_secret]
    return SandboxProvider(url, secrets, timeout_seconds=timeout_seconds)


def build_provider(settings: ProviderSettings, name: str | None = None) -> PaymentProvider:
    """The adapter for `name` (default: PAYMENT_PROVIDER), configured from the settings."""
    chosen = name or settings.payment_provider
    if chosen == "sandbox":
        return sandbox_provider(settings, settings.sandbox_url, timeout_seconds=settings.gateway_timeout_seconds)
    if chosen == "stripe":
        from shared.providers.stripe import StripeProvider

        return StripeProvider.from_settings(settings)
    raise ValueError(f"unknown provider {chosen!r}")
