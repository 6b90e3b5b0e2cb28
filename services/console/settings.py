"""The console's settings: where it listens and is reached, where the intake API is, and its session key.

It reads no API key of its own: each signed-in merchant's key lives in that person's sealed session cookie.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.config import CommonSettings, IntakeClientSettings, fernet_keys, http_url

# The development key sealing the console's sessions; production sets CONSOLE_SESSION_KEY.
DEV_SESSION_KEY = "cGF5c3RyZWFtLWRldi1jb25zb2xlLXNlc3Npb24ta3k="


class ConsoleSettings(CommonSettings, IntakeClientSettings):
    """What the console reads from the environment, and nothing else: no database, no broker, no API key."""

    console_port: int = Field(
        default=8070, ge=0, le=65535, description="HTTP port of the console, the merchant's dashboard"
    )
    console_public_url: str | None = Field(
        default=None,
        description="where staff reach the console; unset: `http://localhost:$CONSOLE_PORT`. An `https://` URL makes"
        " its session cookie `Secure`",
    )
    console_session_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(DEV_SESSION_KEY)],
        description="comma-separated Fernet keys sealing the console's session cookie and CSRF tokens: the first"
        " seals, any opens (rotation). Set your own wherever anyone else can reach the console",
    )
    console_session_max_age_seconds: int = Field(
        default=8 * 3600, ge=60, description="a console session ends this long after sign-in"
    )

    @field_validator("console_public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return http_url(v)

    @field_validator("console_session_key", mode="before")
    @classmethod
    def _session_keys(cls, v: object) -> list[SecretStr]:
        return fernet_keys(v)

    @property
    def console_base_url(self) -> str:
        """The console's own address, as staff's browsers reach it."""
        return (self.console_public_url or f"http://localhost:{self.console_port}").rstrip("/")
