"""The configuration reference, generated from the services' settings classes so it cannot drift from them.

`settings_classes()` lists each service's settings class (services/<name>/settings.py), in the order of
`shared.config.SERVICES`; `render_markdown()` renders the one table of every variable: its default, which services
read it, and what it means (each field's `description`). The documentation site calls it to write
docs/reference/configuration.md; `python -m tools.settings_reference` prints it.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from services.console.settings import ConsoleSettings
from services.gateway_worker.settings import GatewayWorkerSettings
from services.intake_api.settings import IntakeSettings
from services.ledger.settings import LedgerSettings
from services.notifier.settings import NotifierSettings
from services.sandbox_gateway.settings import SandboxGatewaySettings
from services.storefront.settings import StorefrontSettings
from services.webhook_receiver.settings import WebhookReceiverSettings
from shared.config import SERVICES, CommonSettings

_BY_SERVICE: dict[str, type[CommonSettings]] = {
    "intake_api": IntakeSettings,
    "gateway_worker": GatewayWorkerSettings,
    "webhook_receiver": WebhookReceiverSettings,
    "ledger": LedgerSettings,
    "notifier": NotifierSettings,
    "sandbox_gateway": SandboxGatewaySettings,
    "storefront": StorefrontSettings,
    "console": ConsoleSettings,
}
# Defaults better said in words than shown (a key that must not be copied into production).
SHOWN_DEFAULTS = {"webhook_secrets_key": "a development key", "console_session_key": "a development key"}


def settings_classes() -> list[tuple[str, type[CommonSettings]]]:
    """(service name, its settings class) for every service, in the order of `shared.config.SERVICES`."""
    missing = [service.name for service in SERVICES if service.name not in _BY_SERVICE]
    if missing:
        raise RuntimeError(f"no settings class for {', '.join(missing)}: add it to tools/settings_reference.py")
    return [(service.name, _BY_SERVICE[service.name]) for service in SERVICES]


def variables() -> dict[str, tuple[FieldInfo, list[str]]]:
    """Every variable (upper case): its field, and the services that read it; the common ones first."""
    found: dict[str, tuple[FieldInfo, list[str]]] = {}
    for name, field in CommonSettings.model_fields.items():
        found[name.upper()] = (field, [])
    for service, cls in settings_classes():
        for name, field in cls.model_fields.items():
            found.setdefault(name.upper(), (field, []))[1].append(service)
    return found


def default_text(name: str, field: FieldInfo) -> str:
    """The default as a value of the variable would be written, or `unset`."""
    if name in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[name]
    value = field.get_default(call_default_factory=True)
    return _as_variable(value)


def _as_variable(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return _as_variable(value.get_secret_value())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        if all(isinstance(item, tuple) for item in value):
            return ",".join(":".join(_as_variable(part) for part in item) for item in value)
        return ",".join(_as_variable(item) for item in value)
    return str(value)


def render_markdown() -> str:
    """The configuration reference table: variable, default, the services that read it, meaning."""
    rows = [
        "| variable | default | read by | meaning |",
        "| --- | --- | --- | --- |",
    ]
    everyone = len(SERVICES)
    for variable, (field, services) in variables().items():
        readers = "every service" if len(services) == everyone else ", ".join(f"`{s}`" for s in services)
        meaning = (field.description or "").replace("|", "\\|")
        default = default_text(variable.lower(), field)
        shown = default if default in ("unset", *SHOWN_DEFAULTS.values()) else f"`{default}`"
        rows.append(f"| `{variable}` | {shown} | {readers} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
