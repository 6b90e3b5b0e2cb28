"""Each service's settings (docs/reference/configuration.md): defaults, parsing, one clear line naming a bad variable,
and only its own variables."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.gateway_worker.settings import GatewayWorkerSettings
from services.intake_api.settings import IntakeSettings
from services.ledger.settings import LedgerSettings
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.storefront.settings import StorefrontSettings
from services.webhook_receiver.settings import WebhookReceiverSettings
from tests.support.processes import ROOT
from tools.settings_reference import render_markdown, settings_classes
from tools.stack import Stack


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    ledger, intake, gateway = LedgerSettings(), IntakeSettings(), GatewayWorkerSettings()
    stack = Stack.of()
    assert ledger.database_url.get_secret_value() == "postgresql://postgres@localhost:5432/paystream"
    assert ledger.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert ledger.broker_namespace == "paystream"
    assert intake.merchants_by_key == {"sk_test_demo": "demo"}
    assert gateway.payment_provider == "sandbox"
    assert [s.get_secret_value() for s in WebhookReceiverSettings().sandbox_webhook_secret] == ["whsec_sandbox_dev"]
    assert (intake.payment_ttl_seconds, ledger.expiry_sweep_interval_seconds) == (1800, 5)
    assert (stack.port("intake_api"), stack.port("webhook_receiver"), stack.port("ledger")) == (8080, 8081, 8082)
    assert (stack.port("gateway_worker"), stack.port("sandbox_gateway"), stack.port("storefront")) == (8083, 8090, 8000)


def test_api_keys_parse_into_a_lookup_by_key() -> None:
    settings = IntakeSettings(intake_api_keys="shop-a:sk_a, shop-b:sk_b")
    assert settings.merchants_by_key == {"sk_a": "shop-a", "sk_b": "shop-b"}


def test_webhook_secrets_are_a_rotation_list() -> None:
    settings = WebhookReceiverSettings(sandbox_webhook_secret="whsec_new,whsec_old")
    assert [s.get_secret_value() for s in settings.sandbox_webhook_secret] == ["whsec_new", "whsec_old"]


def test_secrets_never_show_in_the_settings_repr() -> None:
    intake = IntakeSettings(intake_api_keys="shop:sk_live_secret")
    receiver = WebhookReceiverSettings(sandbox_webhook_secret="whsec_hidden")
    assert "sk_live_secret" not in repr(intake)
    assert "whsec_hidden" not in repr(receiver)


def python_with_only(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Python run in the repo root with `env` and a PATH as its whole environment: nothing inherited."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("ledger", "DATABASE_URL", "mysql://x"),
        ("ledger", "AMQP_URL", "not a url"),
        ("ledger", "AMQP_URL", "amqp://guest:guest@node-a:5672/,,amqp://guest:guest@node-b:5672/"),
        ("ledger", "AMQP_URL", "amqp://guest:guest@node-a:5672/,http://node-b:5672/"),
        ("gateway_worker", "PAYMENT_PROVIDER", "paypal"),
        ("intake_api", "INTAKE_API_KEYS", "no-colon-here"),
        ("gateway_worker", "SANDBOX_URL", "ftp://sandbox"),
        ("intake_api", "PAYMENT_TTL_SECONDS", "-1"),
        ("ledger", "LOG_FORMAT", "xml"),
    ],
)
def test_an_invalid_value_stops_the_service_with_one_line_naming_the_variable(
    service: str, variable: str, value: str
) -> None:
    # Each variable is checked by the services that read it (the others ignore it).
    result = python_with_only(["-m", f"services.{service}"], {variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_stripe_without_an_api_key_is_refused_naming_the_variable() -> None:
    result = python_with_only(["-m", "services.gateway_worker"], {"PAYMENT_PROVIDER": "stripe"})
    assert result.returncode == 2
    assert "STRIPE_API_KEY" in result.stderr


def test_merchant_names_are_read_as_id_name_pairs() -> None:
    assert GatewayWorkerSettings(_env_file=None).merchant_names == {"demo": "Paystream demo shop"}  # type: ignore[call-arg]
    named = GatewayWorkerSettings(_env_file=None, merchant_names="demo: Ada's Books ,other:Bob's Mugs")  # type: ignore[call-arg]
    assert named.merchant_names == {"demo": "Ada's Books", "other": "Bob's Mugs"}
    assert GatewayWorkerSettings(_env_file=None, merchant_names="").merchant_names == {}  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["demo", "demo:", ":Shop", "demo:" + "x" * 101])
def test_a_malformed_merchant_names_value_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        GatewayWorkerSettings(_env_file=None, merchant_names=value)  # type: ignore[call-arg]


def test_the_sandbox_listens_on_loopback_and_takes_no_fault_orders_by_default() -> None:
    settings = SandboxGatewaySettings(_env_file=None, sandbox_admin_token="")  # type: ignore[call-arg]
    assert (settings.sandbox_host, settings.sandbox_admin_token) == ("127.0.0.1", None)


def test_a_service_sees_only_its_own_secrets() -> None:
    # The secrets of one service are no field of another: the storefront holds no intake key list, the receiver
    # no Stripe API key, the ledger no endpoint-secret key.
    fields = {name: set(cls.model_fields) for name, cls in settings_classes()}
    assert "intake_api_keys" not in fields["storefront"]
    assert "stripe_api_key" not in fields["webhook_receiver"] and "stripe_api_key" in fields["gateway_worker"]
    assert "webhook_secrets_key" not in fields["ledger"] | fields["gateway_worker"]
    assert {"database_url", "amqp_url"}.isdisjoint(fields["storefront"] | fields["sandbox_gateway"])
    assert StorefrontSettings(_env_file=None).storefront_key == "sk_test_demo"  # type: ignore[call-arg]


def test_every_setting_says_what_it_means() -> None:
    for name, cls in settings_classes():
        undescribed = [field for field, info in cls.model_fields.items() if not info.description]
        assert undescribed == [], f"{name}: {undescribed}"


def test_the_configuration_reference_is_rendered_from_the_settings_classes() -> None:
    table = render_markdown()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    # The documented variables, with their documented defaults (docs/reference/configuration.md).
    assert "| `postgresql://postgres@localhost:5432/paystream` |" in rows["DATABASE_URL"]
    assert "| `amqp://guest:guest@localhost:5672/` |" in rows["AMQP_URL"]
    assert "| `demo:sk_test_demo` | `intake_api` |" in rows["INTAKE_API_KEYS"]
    assert "| `sandbox` | `gateway_worker` |" in rows["PAYMENT_PROVIDER"]
    assert "| `whsec_sandbox_dev` |" in rows["SANDBOX_WEBHOOK_SECRET"]
    assert "| unset |" in rows["STRIPE_API_KEY"] and "| unset |" in rows["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert "| `0,5,300,1800,7200,18000,36000,36000` | `notifier` |" in rows["WEBHOOK_RETRY_SCHEDULE_SECONDS"]
    assert "| a development key | `intake_api`, `notifier` |" in rows["WEBHOOK_SECRETS_KEY"]
    assert "| `json` | every service |" in rows["LOG_FORMAT"]
    for variable, default in [("INTAKE_PORT", 8080), ("WEBHOOK_PORT", 8081), ("SANDBOX_PORT", 8090)]:
        assert f"| `{default}` |" in rows[variable]
    every = {name.upper() for _, cls in settings_classes() for name in cls.model_fields}
    assert set(rows) == every
