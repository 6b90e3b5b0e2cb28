"""The small common base of every service's settings, and the one list of services.

Each service reads only its own variables and secrets: its class is `services/<name>/settings.py`, built on the bases
here (`CommonSettings` for every process; `BrokerSettings` and `DatabaseSettings` for those that use RabbitMQ or
PostgreSQL). A variable keeps one name everywhere, so one `.env` serves every service. The configuration reference
(docs/reference/configuration.md) is generated from these classes by `tools/settings_reference.py`: every field
says what it means in its `description`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class Service:
    """One Paystream service: the one list every runner, test and manifest reads (never write it again)."""

    name: str  # the package under services/, the Procfile entry and the process name
    trace_name: str  # service.name in traces and logs (docs/reference/observability.md)
    port_variable: str  # the setting holding its HTTP port (docs/reference/configuration.md)
    replicated: bool = True  # `make run REPLICAS=N` runs N of it (the sandbox stands in for one provider)

    @property
    def port_setting(self) -> str:
        """The Settings field of its port."""
        return self.port_variable.lower()


SERVICES = (
    Service("intake_api", "intake-api", "INTAKE_PORT"),
    Service("gateway_worker", "gateway-worker", "GATEWAY_WORKER_PORT"),
    Service("webhook_receiver", "webhook-receiver", "WEBHOOK_PORT"),
    Service("ledger", "ledger", "LEDGER_PORT"),
    Service("notifier", "notifier", "NOTIFIER_PORT"),
    Service("sandbox_gateway", "sandbox-gateway", "SANDBOX_PORT", replicated=False),
    Service("storefront", "storefront", "STOREFRONT_PORT"),
    Service("console", "console", "CONSOLE_PORT"),
)
SERVICES_BY_NAME = {service.name: service for service in SERVICES}
SERVICE_NAMES = tuple(SERVICES_BY_NAME)


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """`value` if it is a URL of one of `schemes` with a host; else ValueError, the URL shown without its password."""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        # The value is shown without its password: this line goes to a terminal or a log.
        shown = value.replace(f":{parts.password}@", ":***@") if parts.password else value
        raise ValueError(f"must be a {'/'.join(schemes)} URL with a host, got {shown!r}")
    return value


def split_amqp_urls(value: str) -> tuple[str, ...]:
    """AMQP_URL as node URLs: one URL, or several comma-separated (nodes of one cluster, tried in order).

    Raises ValueError naming the bad entry: an empty item, a scheme other than amqp(s), no host, or the
    same node twice.
    """
    urls = tuple(item.strip() for item in value.split(","))
    # The messages name the entry by position, never echo it: a URL may hold a password.
    for position, url in enumerate(urls, start=1):
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            which = f"entry {position} of {len(urls)}" if len(urls) > 1 else "the value"
            raise ValueError(f"{which} is not an amqp:// or amqps:// URL with a host")
    if len(set(urls)) != len(urls):
        raise ValueError("names the same node twice")
    return urls


def fernet_keys(value: object) -> list[SecretStr]:
    """Comma-separated Fernet keys (32 url-safe base64 bytes each): the first encrypts, any decrypts (rotation)."""
    from cryptography.fernet import Fernet

    keys = secret_list(value)
    for key in keys:
        try:
            Fernet(key.get_secret_value())
        except (ValueError, TypeError):
            raise ValueError("each key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())") from None
    return keys


def seconds_list(value: object) -> list[float]:
    """Comma-separated seconds (a schedule of delays), none negative, at least one."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        schedule = [float(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise ValueError("expected comma-separated seconds, e.g. 0,5,300") from None
    if not schedule or any(s < 0 or s != s for s in schedule):
        raise ValueError("expected at least one delay, none negative")
    return schedule


def secret_list(value: object) -> list[SecretStr]:
    """Comma-separated secrets (a rotation list: the first is used, any is accepted), at least one."""
    if isinstance(value, list):
        items = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
    else:
        items = str(value).split(",")
    secrets = [SecretStr(s.strip()) for s in items if s.strip()]
    if not secrets:
        raise ValueError("must hold at least one secret")
    return secrets


def http_url(value: str | None) -> str | None:
    """An optional http(s) URL: unset or empty is None."""
    return None if value is None or value == "" else check_url(value, ("http", "https"))


def empty_is_unset(value: object) -> object:
    """An empty variable (`FOO=`) is the same as an unset one."""
    return None if value == "" else value


# Every settings class and mixin says this: from the environment and `.env`, and another service's variable (in
# the same `.env`) is ignored, not refused. (A mixin left at BaseSettings' default would forbid it.)
SETTINGS_CONFIG = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)


class CommonSettings(BaseSettings):
    """What every Paystream process reads: where it listens, its HTTP limits, its logs and traces.

    From the environment (and `.env`); an invalid value stops the service at start with one line naming the
    variable (`load_settings`). Variables of other services are ignored, not refused: one `.env` serves them all.
    """

    model_config = SETTINGS_CONFIG

    http_host: str = Field(
        default="0.0.0.0", description="the address the services listen on (the sandbox: `SANDBOX_HOST`)"
    )
    # The slow-client limits of every HTTP port (docs/reference/intake-api.md, "HTTP limits").
    http_header_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="a connection that has not sent a complete request head this long after opening (or after its"
        " last answer) is closed: slow-header clients cannot pile up, and idle keep-alive connections end",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a body (JSON, webhook, form) not fully received this long after its handler starts reading gets"
        " 408",
    )
    http_max_connections: int = Field(
        default=512,
        ge=1,
        description="open connections per service process; the next one is answered 503 (`Retry-After: 1`) and"
        " closed at once",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint traces are exported to, e.g. `http://localhost:4318`; unset: no export",
    )
    log_format: Literal["json", "console"] = Field(default="json", description="`json` or `console`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`"
    )

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_url(cls, v: str | None) -> str | None:
        return http_url(v)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class BrokerSettings(CommonSettings):
    """A service that publishes or consumes messages: where RabbitMQ is, and the namespace of its names."""

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@localhost:5672/"),
        description="RabbitMQ; several comma-separated URLs (nodes of one cluster): a service uses the first that"
        " answers and moves on when its node goes away",
    )
    broker_namespace: str = Field(
        default="paystream",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="prefix of every exchange and queue name, so several deployments or test runs can share one"
        " broker without seeing each other's messages",
    )

    # How soon a silent partition is noticed (docs/explanation/failure-detection.md). A broker connection that
    # stays silent 3 x (heartbeat + 1) s is dropped and another node tried: 33-38 s with 10.
    amqp_heartbeat_seconds: int = Field(
        default=10,
        ge=1,
        le=600,
        description="the AMQP heartbeat asked of the broker (a `heartbeat` in `AMQP_URL` wins): a connection silent"
        " for 3 x (heartbeat + 1) s is dropped and the next node tried",
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, v: SecretStr) -> SecretStr:
        split_amqp_urls(v.get_secret_value())
        return v


class DatabaseSettings(CommonSettings):
    """A service that owns a schema in PostgreSQL (docs/explanation/ownership.md)."""

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@localhost:5432/paystream"), description="PostgreSQL"
    )
    schema_wait_seconds: float = Field(
        default=60.0,
        gt=0,
        description="how long a service waits at start for a schema it reads to be deployed by its owner, before"
        " it stops naming the service that deploys it",
    )

    # A PostgreSQL statement that has not answered in this time fails (client-side, and server-side as
    # statement_timeout); a connection not made in the connect timeout fails; an idle or half-sent connection
    # whose peer is gone is dropped by TCP keepalive / TCP_USER_TIMEOUT after about the TCP timeout.
    database_statement_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        description="a PostgreSQL statement not answered in this time fails, client-side and server-side"
        " (`statement_timeout`); migrations get 600 s",
    )
    database_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="a PostgreSQL connection not made in this time fails"
    )
    database_tcp_timeout_seconds: int = Field(
        default=15,
        ge=3,
        description="TCP keepalive and `TCP_USER_TIMEOUT` on PostgreSQL connections, on both ends: a connection"
        " whose peer is gone is dropped after about this time",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr) -> SecretStr:
        check_url(v.get_secret_value(), ("postgresql", "postgres"))
        return v


class IntakeClientSettings(BaseSettings):
    """A service that calls the intake API over HTTP as a merchant would (the storefront and the console)."""

    model_config = SETTINGS_CONFIG

    intake_url: str | None = Field(
        default=None,
        description="where the storefront and the console reach the intake API; unset: `http://localhost:$INTAKE_PORT`",
    )
    intake_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP port of the intake API (the default of `INTAKE_URL`)"
    )

    @field_validator("intake_url")
    @classmethod
    def _intake_url(cls, v: str | None) -> str | None:
        return http_url(v)

    @property
    def intake_base_url(self) -> str:
        """Where the intake API is reached."""
        return (self.intake_url or f"http://localhost:{self.intake_port}").rstrip("/")


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read a service's settings, or stop the process with one line naming the offending variable."""
    try:
        return cls()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["loc"]:
            variable = str(first["loc"][0]).upper()
        else:  # a check of several variables together says which it blames first: "VARIABLE: message"
            variable, _, message = message.partition(": ")
        sys.stderr.write(f"paystream: invalid configuration: {variable}: {message}\n")
        raise SystemExit(2) from None
