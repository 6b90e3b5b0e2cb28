"""Generate the reference where the truth is code, at every `mkdocs build` (mkdocs-gen-files runs this script).

Three hand-written pages hold a marker line that this script replaces with a table made from the code:

- docs/reference/configuration.md  `<!-- generated: settings -->`   from the settings class (shared/config.py)
- docs/reference/intake-api.md     `<!-- generated: openapi -->`    from the intake's OpenAPI document
- docs/reference/messages.md       `<!-- generated: asyncapi -->`   from docs/asyncapi.json

The pages keep their prose in the repository; the tables exist only in the built site, so they cannot drift from
the code. A marker that is missing, or a setting without a meaning below, stops the build.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import mkdocs_gen_files
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from services.intake_api.openapi import openapi_document

DOCS = Path(__file__).resolve().parent

# What each variable means, for readers: the code knows names, types and defaults, not purposes. A setting added to
# the class without a line here stops the build (and so `make test`), and so does a line for a setting that is gone.
MEANINGS: dict[str, str] = {
    "DATABASE_URL": "PostgreSQL",
    "AMQP_URL": "RabbitMQ; several comma-separated URLs (nodes of one cluster, e.g. "
    "`amqp://u:p@mq-0:5672/,amqp://u:p@mq-1:5672/`): a service connects to the first that answers and moves to the "
    "next when its node goes away (see [Messaging](../explanation/messaging.md#broker-nodes-and-queues))",
    "BROKER_NAMESPACE": "prefix of every exchange and queue, so deployments or test runs can share a broker",
    "AMQP_HEARTBEAT_SECONDS": "the AMQP heartbeat asked of the broker (a `heartbeat` in `AMQP_URL` wins): a connection "
    "silent for 3 x (heartbeat + 1) s is dropped and the next node tried ([Failure detection]"
    "(../explanation/failure-detection.md))",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "a PostgreSQL statement not answered in this time fails, client-side and "
    "server-side (`statement_timeout`); migrations get 600 s "
    "([Failure detection](../explanation/failure-detection.md))",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "a PostgreSQL connection not made in this time fails",
    "DATABASE_TCP_TIMEOUT_SECONDS": "TCP keepalive and `TCP_USER_TIMEOUT` on PostgreSQL connections, on both ends: a "
    "connection whose peer is gone is dropped after about this time",
    "INTAKE_API_KEYS": "comma-separated `merchant_id:api_key` pairs; a merchant may hold several keys (rotation)",
    "MERCHANT_NAMES": "comma-separated `merchant_id:name` pairs: the shop's name on the hosted payment page (read by "
    "the gateway_worker; a merchant without one is shown by its id)",
    "PAYMENT_PROVIDER": "the provider of new payments ([Switch to Stripe](../how-to/stripe.md))",
    "SANDBOX_URL": "where the gateway_worker reaches the sandbox gateway",
    "SANDBOX_PUBLIC_URL": "the sandbox's address as a customer's browser sees it (the base of every `checkout_url`)",
    "SANDBOX_WEBHOOK_URL": "where the sandbox delivers webhooks",
    "SANDBOX_WEBHOOK_SECRET": "comma-separated: the receiver accepts a signature made with any (rotation); the "
    "sandbox signs with the first",
    "SANDBOX_AUTOPAY": "`succeed` or `fail`: the sandbox completes every new intent by itself (benchmarks, headless "
    "demos)",
    "SANDBOX_DATA_DIR": "a folder where the sandbox keeps its intents and the webhooks it has still to deliver "
    "(`sandbox.sqlite3`), so a restart forgets none, as at a real provider; unset, it keeps them in memory. `make run` "
    "sets `.sandbox/`",
    "SANDBOX_WEBHOOK_RETRY_BASE_SECONDS": "first webhook retry delay of the sandbox (doubles each attempt, capped at "
    "60 s)",
    "SANDBOX_WEBHOOK_MAX_ATTEMPTS": "how often the sandbox tries to deliver one webhook",
    "SANDBOX_HOST": "the address the sandbox listens on: loopback unless set (`0.0.0.0` in compose)",
    "SANDBOX_ADMIN_TOKEN": "the Bearer token of the sandbox's `/_sandbox/*` endpoints (fault injection); unset, they "
    "answer 403",
    "STRIPE_API_KEY": "your Stripe secret key, `sk_test_...` or `sk_live_...`; required when `PAYMENT_PROVIDER` is "
    "`stripe`",
    "STRIPE_WEBHOOK_SECRET": "the signing secret(s) of your Stripe webhook endpoint, comma-separated during a "
    "rotation; unset, the receiver has no `/webhooks/stripe`",
    "STRIPE_API_BASE": "where the Stripe adapter calls Stripe (tests point it at a local fake)",
    "PAYMENT_TTL_SECONDS": "a payment still PENDING this long after creation is expired",
    "AUTHORIZATION_TTL_SECONDS": "a manual-capture payment AUTHORIZED this long is voided at the provider and EXPIRED "
    "(`authorization_expired`); see [capture](capture.md)",
    "EXPIRY_SWEEP_INTERVAL_SECONDS": "how often the ledger looks for payments past their TTL (and due reconciliations)",
    "RECONCILE_AFTER_SECONDS": "a PENDING payment with an intent and no outcome this old is looked up at the provider",
    "RECONCILE_INTERVAL_SECONDS": "at most this often per payment",
    "GATEWAY_MAX_ATTEMPTS": "intent creation attempts on transient provider errors",
    "GATEWAY_RETRY_BASE_SECONDS": "the first backoff between those attempts (doubling, ±20 % jitter)",
    "GATEWAY_TIMEOUT_SECONDS": "bounds each call to the provider",
    "LEDGER_RETRY_ATTEMPTS": "attempts for an event whose payment the ledger has not recorded yet, before the DLQ",
    "LEDGER_RETRY_BASE_SECONDS": "the first backoff between those attempts (doubling)",
    "IDEMPOTENCY_RETENTION_HOURS": "how long the intake keeps its own idempotency records (the ledger keeps the key "
    "for good)",
    "INTAKE_URL": "where the storefront reaches the intake API",
    "STOREFRONT_API_KEY": "the API key the storefront uses (default: the first key of `INTAKE_API_KEYS`)",
    "STOREFRONT_PUBLIC_URL": "the storefront's own public address",
    "INTAKE_PORT": "HTTP port of the intake API",
    "WEBHOOK_PORT": "HTTP port of the webhook receiver",
    "LEDGER_PORT": "HTTP port of the ledger (health and metrics)",
    "GATEWAY_WORKER_PORT": "HTTP port of the gateway_worker (health and metrics)",
    "NOTIFIER_PORT": "HTTP port of the notifier (health and metrics)",
    "SANDBOX_PORT": "HTTP port of the sandbox gateway",
    "STOREFRONT_PORT": "HTTP port of the storefront",
    "WEBHOOK_ALLOW_PRIVATE_URLS": "let merchant webhook endpoints point at loopback, link-local or private addresses "
    "(development only: it is the SSRF guard; `true` under `make run` and in tests)",
    "WEBHOOK_SECRET_GRACE_SECONDS": "after `rotate_secret`, how long the old secret keeps signing beside the new one",
    "WEBHOOK_RETRY_SCHEDULE_SECONDS": "the wait before each delivery attempt of a merchant webhook (±10 % jitter); one "
    "attempt per entry",
    "WEBHOOK_DISABLE_AFTER_SECONDS": "an endpoint failing for longer than this is disabled (event "
    "`webhook_endpoint.disabled`)",
    "WEBHOOK_TIMEOUT_SECONDS": "one delivery attempt gets no longer than this for its answer",
    "WEBHOOK_SECRETS_KEY": "comma-separated Fernet keys that encrypt endpoint secrets at rest; the first encrypts, any "
    "decrypts (key rotation). Set your own in production, the same for intake_api and notifier",
    "STOREFRONT_WEBHOOK_URL": "where the demo shop receives Paystream's webhooks (default "
    "`$STOREFRONT_PUBLIC_URL/webhooks/paystream`)",
    "STOREFRONT_WEBHOOK_SECRET": "with a secret set, the shop uses that endpoint's secret instead of registering one "
    "at start",
    "SCHEMA_WAIT_SECONDS": "how long a service waits at start for a schema it reads to be deployed by its owner; "
    "then it stops with one line naming the service or command that deploys it",
    "HTTP_HOST": "the address the services listen on (the sandbox: `SANDBOX_HOST`)",
    "HTTP_HEADER_TIMEOUT_SECONDS": "a connection that has not sent a complete request head this long after opening "
    "(or after its last answer) is closed",
    "HTTP_BODY_TIMEOUT_SECONDS": "a body not fully received this long after its handler starts reading gets 408",
    "HTTP_MAX_CONNECTIONS": "open connections per service process; the next one is answered 503 (`Retry-After: 1`) and "
    "closed",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/HTTP endpoint, e.g. `http://localhost:4318` (Jaeger); unset, nothing is "
    "exported",
    "LOG_FORMAT": "`json` (one object a line) or `console` (for humans)",
    "LOG_LEVEL": "the lowest level written",
}

# Defaults computed from other settings when the variable is unset (the class says only `None`).
DERIVED_DEFAULTS: dict[str, str] = {
    "SANDBOX_PUBLIC_URL": "`http://localhost:$SANDBOX_PORT`",
    "INTAKE_URL": "`http://localhost:$INTAKE_PORT`",
    "STOREFRONT_PUBLIC_URL": "`http://localhost:$STOREFRONT_PORT`",
    "STOREFRONT_WEBHOOK_URL": "`$STOREFRONT_PUBLIC_URL/webhooks/paystream`",
    "STOREFRONT_API_KEY": "the first key of `INTAKE_API_KEYS`",
    "WEBHOOK_SECRETS_KEY": "a development key",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shown(value: Any) -> str:
    """A default as a reader would type it in the environment."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, tuple) for v in value):
            return ",".join(":".join(_shown(p) for p in pair) for pair in value)
        return ",".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default(variable: str, field: FieldInfo) -> str:
    if variable in DERIVED_DEFAULTS:
        return DERIVED_DEFAULTS[variable]
    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else f"`{_cell(_shown(value))}`"


def _constraints(field: FieldInfo) -> str:
    """The bounds pydantic checks (`> 0`, `≤ 65535`, a pattern), so a reader knows what is refused."""
    words = []
    for item in field.metadata:
        for name, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(item, name, None) is not None:
                words.append(f"{symbol} {_shown(getattr(item, name))}")
        if getattr(item, "pattern", None):
            words.append(f"matches `{item.pattern}`")
    return ", ".join(words)


def _kind(annotation: Any) -> str:
    """A type in a reader's words: secret, integer, one of `a`, `b`, comma-separated list, ..."""
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _kind(arguments[0])
    if origin in (Union, UnionType):
        kinds = [_kind(a) for a in arguments if a is not type(None)]
        return " or ".join(kinds)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in arguments)
    if origin in (list, tuple, dict):
        return "comma-separated list"
    names = {SecretStr: "secret", bool: "true or false", int: "integer", float: "number", str: "text"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def settings_markdown() -> str:
    """The configuration reference: from the per-service settings classes when their renderer exists
    (`tools.settings_reference`), else from the one settings class of `shared/config.py`."""
    try:
        from tools.settings_reference import render_markdown
    except ImportError:
        return settings_table()
    return str(render_markdown())


def settings_table() -> str:
    """One row per environment variable of the settings class: default, type and bounds, meaning."""
    from shared.config import Settings

    fields = Settings.model_fields
    variables = {name.upper(): field for name, field in fields.items()}
    missing = sorted(set(variables) - set(MEANINGS))
    stale = sorted(set(MEANINGS) - set(variables))
    if missing or stale:
        raise SystemExit(f"docs/gen_reference.py: settings without a meaning {missing}, meanings of no setting {stale}")
    rows = ["| variable | default | type | meaning |", "| --- | --- | --- | --- |"]
    for variable, field in variables.items():
        kind = _kind(field.annotation)
        if bounds := _constraints(field):
            kind = f"{kind}, {bounds}"
        rows.append(f"| `{variable}` | {_default(variable, field)} | {_cell(kind)} | {_cell(MEANINGS[variable])} |")
    return "\n".join(rows) + "\n"


def _status_line(code: str, response: dict[str, Any]) -> str:
    return f"**{code}** {_cell(response.get('description', '').split(chr(10))[0])}"


def openapi_tables() -> str:
    """Every operation of the intake's OpenAPI document, and the answers it documents."""
    document = openapi_document()
    out = [f"OpenAPI {document['openapi']}, *{document['info']['title']}* {document['info']['version']}.", ""]
    out += ["| operation | summary | answers |", "| --- | --- | --- |"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answers = " · ".join(sorted(operation["responses"]))
            out.append(f"| `{method.upper()} {path}` | {_cell(operation.get('summary', ''))} | {answers} |")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            out += ["", f"### `{method.upper()} {path}`", ""]
            if description := operation.get("description"):
                out += [description.strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                out += ["| parameter | in | required | description |", "| --- | --- | --- | --- |"]
                for parameter in parameters:
                    out.append(
                        f"| `{parameter['name']}` | {parameter['in']} | {'yes' if parameter.get('required') else 'no'}"
                        f" | {_cell(parameter.get('description', ''))} |"
                    )
                out.append("")
            out += ["| status | meaning |", "| --- | --- |"]
            for code, response in operation["responses"].items():
                out.append(f"| {code} | {_cell(response.get('description', ''))} |")
    return "\n".join(out) + "\n"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def asyncapi_tables() -> str:
    """Every message of docs/asyncapi.json: routing key, summary, who publishes and which queues receive it."""
    document = json.loads((DOCS / "asyncapi.json").read_text())
    messages = document["components"]["messages"]
    receivers: dict[str, list[str]] = {}
    for operation in document["operations"].values():
        if operation["action"] != "receive":
            continue
        channel = document["channels"][_ref_name(operation["channel"]["$ref"])]
        for message in operation.get("messages", []):
            receivers.setdefault(_ref_name(message["$ref"]), []).append(f"`{channel['address']}`")
    out = [f"AsyncAPI {document['asyncapi']}, *{document['info']['title']}* {document['info']['version']}.", ""]
    out += ["| message | routing key | what it says | received on |", "| --- | --- | --- | --- |"]
    for name, message in messages.items():
        queues = ", ".join(sorted(set(receivers.get(name, [])))) or "—"
        out.append(f"| `{name}` | `{message['name']}` | {_cell(message.get('summary', ''))} | {queues} |")
    out += ["", "## Queues", "", "| queue | consumer | description |", "| --- | --- | --- |"]
    for operation in document["operations"].values():
        if operation["action"] == "receive":
            channel = document["channels"][_ref_name(operation["channel"]["$ref"])]
            description = channel.get("description") or operation.get("summary", "")
            out.append(f"| `{channel['address']}` | {_cell(operation.get('summary', ''))} | {_cell(description)} |")
    return "\n".join(out) + "\n"


GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "reference/configuration.md": ("<!-- generated: settings -->", settings_markdown),
    "reference/intake-api.md": ("<!-- generated: openapi -->", openapi_tables),
    "reference/messages.md": ("<!-- generated: asyncapi -->", asyncapi_tables),
}


def pages() -> Iterator[tuple[str, str]]:
    """Each page with its marker replaced by what the code says."""
    for page, (marker, render) in GENERATED.items():
        text = (DOCS / page).read_text()
        if marker not in text:
            raise SystemExit(f"docs/gen_reference.py: {page} has no {marker} line")
        yield page, text.replace(marker, render())


for page, text in pages():
    with mkdocs_gen_files.open(page, "w") as generated:
        generated.write(text)
