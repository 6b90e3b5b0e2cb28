"""Webhook endpoint secrets: made here, stored encrypted (Fernet, keyed by WEBHOOK_SECRETS_KEY), signed with.

A database dump alone cannot forge a signature: the secrets in it are ciphertext, and the key lives only in the
environment of the intake API (which encrypts a new secret) and the notifier (which decrypts it to sign).
Several keys may be configured: the first encrypts, any decrypts, so the key itself can be rotated.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from typing import Annotated

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from shared.config import SETTINGS_CONFIG, fernet_keys

SECRET_PREFIX = "whsec_"
# The development key that encrypts webhook endpoint secrets at rest; production sets WEBHOOK_SECRETS_KEY.
DEV_WEBHOOK_SECRETS_KEY = "cGF5c3RyZWFtLWRldi13ZWJob29rLXNlY3JldC1rZXk="


class SecretsAtRestSettings(BaseSettings):
    """The key of the endpoint secrets at rest: of the two services that hold it, the intake and the notifier."""

    model_config = SETTINGS_CONFIG

    webhook_secrets_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(DEV_WEBHOOK_SECRETS_KEY)],
        description="comma-separated Fernet keys that encrypt webhook endpoint secrets at rest: the first encrypts,"
        " any decrypts (rotation); the default is a development key, production sets its own",
    )

    @field_validator("webhook_secrets_key", mode="before")
    @classmethod
    def _webhook_keys(cls, v: object) -> list[SecretStr]:
        return fernet_keys(v)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64 (the part after `whsec_` is the key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with the configured keys."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._fernet = MultiFernet([Fernet(key.get_secret_value()) for key in keys])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret; ValueError if no configured key opens it (the key was changed without keeping the old)."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError("no WEBHOOK_SECRETS_KEY opens this endpoint secret") from None
