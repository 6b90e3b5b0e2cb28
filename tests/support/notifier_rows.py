"""Rows the notifier reads, written straight into the database: payments in the ledger's table, merchant endpoints.

For tests and diagnostics of the notifier alone, without a ledger or an intake API running.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic import SecretStr

from shared.webhook_secrets import DEV_WEBHOOK_SECRETS_KEY, SecretBox, new_signing_secret

# The box the notifier opens secrets with when WEBHOOK_SECRETS_KEY is not set.
DEV_BOX = SecretBox([SecretStr(DEV_WEBHOOK_SECRETS_KEY)])

_INSERT_PAYMENTS = """
INSERT INTO ledger.payment_requests
    (id, merchant_id, idempotency_key, request_fingerprint, reference, amount, currency, metadata, return_url,
     status, created_at, updated_at, expires_at)
SELECT id, $2, 'key-' || id, repeat('f', 64), 'order-' || id, 1999, 'USD', '{"cart": "42"}'::jsonb,
       'https://shop.example/done', 'PENDING', $3, $3, $4
FROM unnest($1::text[]) AS id
"""


async def insert_payments(pool: asyncpg.Pool, payment_ids: Sequence[str], merchant_id: str) -> None:
    """PENDING payments of 19.99 USD, as the ledger records a new one."""
    now = datetime.now(UTC)
    await pool.execute(_INSERT_PAYMENTS, list(payment_ids), merchant_id, now, now + timedelta(minutes=30))


async def set_status(pool: asyncpg.Pool, payment_ids: Sequence[str], status: str) -> None:
    """The payments' status changed, as the ledger writes it."""
    await pool.execute(
        "UPDATE ledger.payment_requests SET status = $2, updated_at = clock_timestamp(), version = version + 1"
        " WHERE id = ANY ($1)",
        list(payment_ids),
        status,
    )


async def insert_endpoint(
    pool: asyncpg.Pool, endpoint_id: str, merchant_id: str, url: str, events: Sequence[str] = ("*",)
) -> str:
    """An enabled endpoint, its secret sealed with the development key; returns the secret."""
    secret = new_signing_secret()
    await pool.execute(
        "INSERT INTO notifier.webhook_endpoints (id, merchant_id, url, events, secret_sealed)"
        " VALUES ($1, $2, $3, $4, $5)",
        endpoint_id,
        merchant_id,
        url,
        list(events),
        DEV_BOX.seal(secret),
    )
    return secret
