"""Who owns which schema, and what each owner publishes to whom: the ownership map as data
(docs/explanation/ownership.md).

Every service that keeps records owns one schema and connects to PostgreSQL as its own role, which owns that schema
and nothing else. Only the owner writes its tables. Another service reads them only through an interface the owner
publishes and versions (a view `<schema>.<name>_v<N>`, or a function for the few changes another service may ask
for), granted to exactly the services listed here. `shared/db.py` creates the roles, the views and these grants
when the owner deploys; a query outside them fails with "permission denied" in the tests, not in review.

A new reader, view or column is added here; a function, in the owner's migrations and here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared.payment_resource import LEDGER_COLUMNS


@dataclass(frozen=True)
class View:
    """A view the owner publishes: the columns of its table (each a column, or `expression AS name`) others read.

    The owner's deploy creates it and appends the columns added here since (a reader's query never breaks on a
    column that came later); a column is never dropped or changed in place: that is a new version (`_v2`)."""

    # The owner's table it shows; None: a view its owner's migrations define (a join, say), only granted here.
    source: str | None
    columns: tuple[str, ...]
    readers: tuple[str, ...]

    def expressions(self) -> dict[str, str]:
        """{column name: its expression over the source}."""
        return {column.rsplit(" AS ", 1)[-1]: column.rsplit(" AS ", 1)[0] for column in self.columns}


@dataclass(frozen=True)
class Schema:
    """A schema, the service that owns it, and the interfaces it publishes to other services."""

    name: str
    owner: str
    views: dict[str, View] = field(default_factory=dict)
    # Functions that change the owner's records on another service's behalf (SECURITY DEFINER, the owner's code,
    # in its migrations): {qualified name: reader services}.
    functions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def interfaces(self) -> dict[str, tuple[str, ...]]:
        """Every interface and the services granted it."""
        return {**{name: view.readers for name, view in self.views.items()}, **self.functions}


SCHEMAS: tuple[Schema, ...] = (
    # The intake's idempotency records and its outbox: nobody else reads them.
    Schema("intake", "intake_api"),
    # The record of truth of every payment and its audit log.
    Schema(
        "ledger",
        "ledger",
        views={
            # Payments as merchants see them (the payment resource), and what reads by merchant, by idempotency
            # key and a cancel need besides.
            "ledger.payments_v1": View(
                "ledger.payment_requests",
                (
                    *LEDGER_COLUMNS,
                    "merchant_id",
                    "idempotency_key",
                    "request_fingerprint",
                    "provider",
                    "provider_payment_id",
                ),
                readers=("intake_api", "notifier"),
            ),
            # Each payment's log, in the order it was recorded (id), as GET /v1/payments/{id}/events shows it.
            "ledger.payment_events_v1": View(
                "ledger.payment_logs",
                (
                    "id",
                    "payment_request_id AS payment_id",
                    "event_id",
                    "event_type",
                    "from_status",
                    "to_status",
                    "source",
                    "outcome",
                    "occurred_at",
                    "recorded_at",
                    "refund_id",
                    "refund_to_status",
                ),
                readers=("intake_api",),
            ),
            # Refunds as merchants see them, with their payment's refunded total (services/ledger/migrations/010).
            "ledger.refunds_v1": View(
                None,
                (
                    "id",
                    "payment_id",
                    "merchant_id",
                    "amount",
                    "currency",
                    "reason",
                    "metadata",
                    "status",
                    "failure_code",
                    "created_at",
                    "updated_at",
                    "payment_amount_refunded",
                    "payment_amount",
                ),
                readers=("intake_api", "notifier"),
            ),
        },
    ),
    # Merchants' webhook endpoints, their events and every delivery attempt.
    Schema(
        "notifier",
        "notifier",
        # Created by the notifier's migration 002 (its functions return endpoint rows of this view's type).
        views={
            # Endpoints without their secrets (the intake hands a secret out once, when it makes it).
            "notifier.webhook_endpoints_v1": View(
                "notifier.webhook_endpoints",
                ("id", "merchant_id", "url", "events", "status", "created_at", "disabled_at", "deleted_at"),
                readers=("intake_api",),
            ),
            "notifier.events_v1": View(
                "notifier.events",
                ("seq", "id", "merchant_id", "type", "payment_id", "data", "created_at"),
                readers=("intake_api",),
            ),
            "notifier.delivery_attempts_v1": View(
                "notifier.delivery_attempts",
                (
                    "id",
                    "event_id",
                    "endpoint_id",
                    "attempt",
                    "status_code",
                    "error",
                    "duration_ms",
                    "attempted_at",
                    "next_attempt_at",
                ),
                readers=("intake_api",),
            ),
        },
        functions={
            # The intake API is where merchants manage their endpoints; the notifier's code writes them.
            "notifier.register_webhook_endpoint_v1": ("intake_api",),
            "notifier.delete_webhook_endpoint_v1": ("intake_api",),
            "notifier.rotate_webhook_endpoint_secret_v1": ("intake_api",),
        },
    ),
)
SCHEMAS_BY_OWNER = {schema.owner: schema for schema in SCHEMAS}
SCHEMAS_BY_NAME = {schema.name: schema for schema in SCHEMAS}
# The services with a database role: the owners of a schema.
DATABASE_SERVICES = tuple(SCHEMAS_BY_OWNER)


def reads(service: str) -> list[str]:
    """The interfaces of other services' schemas that `service` may use (what it declares it reads)."""
    return [
        interface
        for schema in SCHEMAS
        if schema.owner != service
        for interface, readers in schema.interfaces().items()
        if service in readers
    ]


def owner_of(interface: str) -> str:
    """The service that owns the schema of `interface` (`schema.name`)."""
    return SCHEMAS_BY_NAME[interface.split(".", 1)[0]].owner


def role_name(database: str, service: str) -> str:
    """The PostgreSQL role `service` connects as in `database`.

    Roles are global to a PostgreSQL server and several databases (test runs, deployments) may share one: the name
    carries the database's, so no two share a role. Past PostgreSQL's 63 characters, a digest stands in."""
    name = f"{database}_{service}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{database[: 63 - len(service) - 12]}_{digest}_{service}"
