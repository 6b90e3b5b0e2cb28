"""Settings (docs/reference/configuration.md): defaults, parsing, and one clear line naming a bad variable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared.config import Settings
from tests.support.processes import ROOT


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    settings = Settings()
    assert settings.database_url.get_secret_value() == "postgresql://postgres@localhost:5432/paystream"
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert settings.broker_namespace == "paystream"
    assert settings.merchants_by_key == {"sk_test_demo": "demo"}
    assert settings.payment_provider == "sandbox"
    assert [s.get_secret_value() for s in settings.sandbox_webhook_secret] == ["whsec_sandbox_dev"]
    assert (settings.payment_ttl_seconds, settings.expiry_sweep_interval_seconds) == (1800, 5)
    assert (settings.intake_port, settings.webhook_port, settings.ledger_port) == (8080, 8081, 8082)
    assert (settings.gateway_worker_port, settings.sandbox_port, settings.storefront_port) == (8083, 8090, 8000)


def test_api_keys_parse_into_a_lookup_by_key() -> None:
    settings = Settings(intake_api_keys="shop-a:sk_a, shop-b:sk_b")
    assert settings.merchants_by_key == {"sk_a": "shop-a", "sk_b": "shop-b"}


def test_webhook_secrets_are_a_rotation_list() -> None:
    settings = Settings(sandbox_webhook_secret="whsec_new,whsec_old")
    assert [s.get_secret_value() for s in settings.sandbox_webhook_secret] == ["whsec_new", "whsec_old"]


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = Settings(intake_api_keys="shop:sk_live_secret", sandbox_webhook_secret="whsec_hidden")
    assert "sk_live_secret" not in repr(settings)
    assert "whsec_hidden" not in repr(settings)


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
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://x"),
        ("AMQP_URL", "not a url"),
        ("AMQP_URL", "amqp://guest:guest@node-a:5672/,,amqp://guest:guest@node-b:5672/"),
        ("AMQP_URL", "amqp://guest:guest@node-a:5672/,http://node-b:5672/"),
        ("PAYMENT_PROVIDER", "paypal"),
        ("INTAKE_API_KEYS", "no-colon-here"),
        ("SANDBOX_URL", "ftp://sandbox"),
        ("PAYMENT_TTL_SECONDS", "-1"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_an_invalid_value_stops_the_service_with_one_line_naming_the_variable(variable: str, value: str) -> None:
    result = python_with_only(["-m", "services.ledger"], {variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


def test_stripe_without_an_api_key_is_refused_naming_the_variable() -> None:
    result = python_with_only(
        ["-c", "from shared.config import load_settings; load_settings()"], {"PAYMENT_PROVIDER": "stripe"}
    )
    assert result.returncode == 2
    assert "STRIPE_API_KEY" in result.stderr


def test_merchant_names_are_read_as_id_name_pairs() -> None:
    assert Settings(_env_file=None).merchant_names == {"demo": "Paystream demo shop"}  # type: ignore[call-arg]
    named = Settings(_env_file=None, merchant_names="demo: Ada's Books ,other:Bob's Mugs")  # type: ignore[call-arg]
    assert named.merchant_names == {"demo": "Ada's Books", "other": "Bob's Mugs"}
    assert Settings(_env_file=None, merchant_names="").merchant_names == {}  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["demo", "demo:", ":Shop", "demo:" + "x" * 101])
def test_a_malformed_merchant_names_value_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, merchant_names=value)  # type: ignore[call-arg]


def test_the_sandbox_listens_on_loopback_and_takes_no_fault_orders_by_default() -> None:
    settings = Settings(_env_file=None, sandbox_admin_token="")  # type: ignore[call-arg]
    assert (settings.sandbox_host, settings.sandbox_admin_token) == ("127.0.0.1", None)
