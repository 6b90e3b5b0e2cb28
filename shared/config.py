"""Settings every service reads (docs/reference/configuration.md): one class, the same names everywhere, read once in
main()."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
)
SERVICES_BY_NAME = {service.name: service for service in SERVICES}
SERVICE_NAMES = tuple(SERVICES_BY_NAME)


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
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


# The development key that encrypts webhook endpoint secrets at rest; production sets WEBHOOK_SECRETS_KEY.
DEV_WEBHOOK_SECRETS_KEY = "cGF5c3RyZWFtLWRldi13ZWJob29rLXNlY3JldC1rZXk="
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def _fernet_keys(value: object) -> list[SecretStr]:
    """Comma-separated Fernet keys (32 url-safe base64 bytes each): the first encrypts, any decrypts (rotation)."""
    from cryptography.fernet import Fernet

    keys = _secret_list(value)
    for key in keys:
        try:
            Fernet(key.get_secret_value())
        except (ValueError, TypeError):
            raise ValueError("each key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())") from None
    return keys


def _schedule(value: object) -> list[float]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        schedule = [float(str(item).strip()) for item in items if str(item).strip()]
    except ValueError:
        raise ValueError("expected comma-separated seconds, e.g. 0,5,300") from None
    if not schedule or any(s < 0 or s != s for s in schedule):
        raise ValueError("expected at least one delay, none negative")
    return schedule


def _secret_list(value: object) -> list[SecretStr]:
    if isinstance(value, list):
        items = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
    else:
        items = str(value).split(",")
    secrets = [SecretStr(s.strip()) for s in items if s.strip()]
    if not secrets:
        raise ValueError("must hold at least one secret")
    return secrets


class Settings(BaseSettings):
    """Configuration from the environment (and `.env`); an invalid value stops the service at start."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Secrets: they may hold passwords (shown redacted in logs, errors and reprs).
    database_url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/paystream")
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
    broker_namespace: str = Field(default="paystream", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    # How soon a silent partition is noticed (docs/explanation/failure-detection.md). A broker connection that
    # stays silent 3 x (heartbeat + 1) s is dropped and another node tried: 33-38 s with 10.
    amqp_heartbeat_seconds: int = Field(default=10, ge=1, le=600)
    # A PostgreSQL statement that has not answered in this time fails (client-side, and server-side as
    # statement_timeout); a connection not made in the connect timeout fails; an idle or half-sent connection
    # whose peer is gone is dropped by TCP keepalive / TCP_USER_TIMEOUT after about the TCP timeout.
    database_statement_timeout_seconds: float = Field(default=15.0, gt=0)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    database_tcp_timeout_seconds: int = Field(default=15, ge=3)
    intake_api_keys: Annotated[list[tuple[str, SecretStr]], NoDecode] = Field(
        default_factory=lambda: [("demo", SecretStr("sk_test_demo"))]
    )
    # merchant_id -> the shop's name as customers know it, shown on the hosted payment page.
    merchant_names: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: {"demo": "Paystream demo shop"})
    payment_provider: Literal["sandbox", "stripe"] = "sandbox"
    sandbox_url: str = "http://localhost:8090"
    sandbox_public_url: str | None = None
    sandbox_webhook_url: str = "http://localhost:8081/webhooks/sandbox"
    sandbox_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr("whsec_sandbox_dev")]
    )
    sandbox_autopay: Literal["succeed", "fail"] | None = None
    sandbox_webhook_retry_base_seconds: float = Field(default=1.0, gt=0)
    sandbox_webhook_max_attempts: int = Field(default=10, ge=8)
    # The sandbox takes fault-injection orders and test cards: it listens on loopback unless opened on purpose.
    sandbox_host: str = "127.0.0.1"
    # Bearer token of /_sandbox/* (fault injection); unset, those endpoints are refused.
    sandbox_admin_token: SecretStr | None = None
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] | None = None
    stripe_api_base: str = "https://api.stripe.com"
    payment_ttl_seconds: int = Field(default=1800, gt=0)
    # How long a manual-capture payment's hold lasts once AUTHORIZED before it is voided (7 days, as card holds).
    authorization_ttl_seconds: int = Field(default=604800, gt=0)
    expiry_sweep_interval_seconds: float = Field(default=5, gt=0)
    reconcile_after_seconds: int = Field(default=600, gt=0)
    reconcile_interval_seconds: int = Field(default=300, gt=0)
    gateway_max_attempts: int = Field(default=5, ge=1)
    gateway_retry_base_seconds: float = Field(default=4.0, gt=0)
    gateway_timeout_seconds: float = Field(default=10.0, gt=0)
    ledger_retry_attempts: int = Field(default=8, ge=1)
    ledger_retry_base_seconds: float = Field(default=1.0, gt=0)
    idempotency_retention_hours: float = Field(default=24, ge=24)
    intake_url: str | None = None
    storefront_api_key: SecretStr | None = None
    storefront_public_url: str | None = None
    intake_port: int = Field(default=8080, ge=0, le=65535)
    webhook_port: int = Field(default=8081, ge=0, le=65535)
    ledger_port: int = Field(default=8082, ge=0, le=65535)
    gateway_worker_port: int = Field(default=8083, ge=0, le=65535)
    notifier_port: int = Field(default=8084, ge=0, le=65535)
    sandbox_port: int = Field(default=8090, ge=0, le=65535)
    storefront_port: int = Field(default=8000, ge=0, le=65535)
    webhook_allow_private_urls: bool = False
    webhook_secret_grace_seconds: int = Field(default=86400, ge=0)
    webhook_retry_schedule_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE)
    )
    webhook_disable_after_seconds: float = Field(default=432000, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_secrets_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(DEV_WEBHOOK_SECRETS_KEY)]
    )
    storefront_webhook_url: str | None = None
    storefront_webhook_secret: SecretStr | None = None
    # How long a service waits at start for a schema it reads to be deployed by its owner before it stops.
    schema_wait_seconds: float = Field(default=60.0, gt=0)
    http_host: str = "0.0.0.0"
    # The slow-client limits of every HTTP port (README "HTTP limits").
    http_header_timeout_seconds: float = Field(default=5.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    http_max_connections: int = Field(default=512, ge=1)
    otel_exporter_otlp_endpoint: str | None = None
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr) -> SecretStr:
        _check_url(v.get_secret_value(), ("postgresql", "postgres"))
        return v

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, v: SecretStr) -> SecretStr:
        split_amqp_urls(v.get_secret_value())
        return v

    @field_validator(
        "sandbox_url",
        "sandbox_webhook_url",
        "stripe_api_base",
        "sandbox_public_url",
        "intake_url",
        "storefront_public_url",
        "storefront_webhook_url",
        "otel_exporter_otlp_endpoint",
    )
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return None if v is None or v == "" else _check_url(v, ("http", "https"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("webhook_secrets_key", mode="before")
    @classmethod
    def _webhook_keys(cls, v: object) -> list[SecretStr]:
        return _fernet_keys(v)

    @field_validator("webhook_retry_schedule_seconds", mode="before")
    @classmethod
    def _retry_schedule(cls, v: object) -> list[float]:
        return _schedule(v)

    @field_validator(
        "sandbox_autopay", "stripe_api_key", "sandbox_admin_token", "storefront_webhook_secret", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

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

    @field_validator("sandbox_webhook_secret", mode="before")
    @classmethod
    def _secrets(cls, v: object) -> list[SecretStr]:
        return _secret_list(v)

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _optional_secrets(cls, v: object) -> list[SecretStr] | None:
        return None if v in (None, "") else _secret_list(v)

    @model_validator(mode="after")
    def _stripe_needs_a_key(self) -> Settings:
        if self.payment_provider == "stripe" and self.stripe_api_key is None:
            raise ValueError("must be set when PAYMENT_PROVIDER is stripe")
        return self

    # Derived values: where other processes are reached, defaulting to this machine's ports.
    @property
    def merchants_by_key(self) -> dict[str, str]:
        return {key.get_secret_value(): merchant for merchant, key in self.intake_api_keys}

    @property
    def sandbox_checkout_base(self) -> str:
        return (self.sandbox_public_url or f"http://localhost:{self.sandbox_port}").rstrip("/")

    @property
    def intake_base_url(self) -> str:
        return (self.intake_url or f"http://localhost:{self.intake_port}").rstrip("/")

    @property
    def storefront_base_url(self) -> str:
        return (self.storefront_public_url or f"http://localhost:{self.storefront_port}").rstrip("/")

    @property
    def storefront_key(self) -> str:
        if self.storefront_api_key is not None:
            return self.storefront_api_key.get_secret_value()
        return self.intake_api_keys[0][1].get_secret_value()


def load_settings() -> Settings:
    """Read the settings, or stop the process with one line naming the offending variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "STRIPE_API_KEY"
        message = first["msg"].removeprefix("Value error, ")
        sys.stderr.write(f"paystream: invalid configuration: {variable}: {message}\n")
        raise SystemExit(2) from None
