"""Every running service's GET /metrics (docs/reference/observability.md, issue 6): after one payment, each metric is
exported by
the service that owns it, and the counters of that payment's path have grown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import IntakeClient, simulate_card
from tests.support.processes import ALL_SERVICES, Stack, eventually

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    samples: dict[tuple[str, Labels], float]
    families: set[str]  # declared metric names (HELP/TYPE), with or without samples

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 if it is not there (a labelled counter appears at its first increment)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        wanted = labels.items()
        return any(n == name and wanted <= dict(ls).items() for n, ls in self.samples)


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: dict[tuple[str, Labels], float] = {}
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, families)


async def scrape_all(http: aiohttp.ClientSession, stack: Stack) -> dict[str, Scrape]:
    return {name: await scrape(http, stack.url(name)) for name in ALL_SERVICES}


# Counters one successful payment increments, in the service that counts them: (name, labels).
COUNTED: Mapping[str, list[tuple[str, dict[str, str]]]] = {
    "intake_api": [
        ("paystream_payments_created_total", {}),
        ("paystream_outbox_published_total", {}),
        ("paystream_http_request_duration_seconds_count", {"method": "POST", "route": "/v1/payments", "status": "201"}),
        (
            "paystream_events_processed_total",
            {"consumer": "intake_api", "event_type": "payment.intent_created", "outcome": "handled"},
        ),
    ],
    "gateway_worker": [
        (
            "paystream_gateway_request_duration_seconds_count",
            {"provider": "sandbox", "operation": "create_intent", "outcome": "ok"},
        ),
        (
            "paystream_events_processed_total",
            {"consumer": "gateway_worker", "event_type": "payment.requested", "outcome": "handled"},
        ),
        ("paystream_event_processing_seconds_count", {"consumer": "gateway_worker", "event_type": "payment.requested"}),
    ],
    "webhook_receiver": [
        ("paystream_webhooks_received_total", {"provider": "sandbox", "outcome": "accepted"}),
        (
            "paystream_http_request_duration_seconds_count",
            {"method": "POST", "route": "/webhooks/{provider}", "status": "200"},
        ),
    ],
    "ledger": [
        ("paystream_payments_completed_total", {"status": "SUCCEEDED"}),
        ("paystream_payment_completion_seconds_count", {"status": "SUCCEEDED"}),
        (
            "paystream_events_processed_total",
            {"consumer": "ledger", "event_type": "payment.status_changed", "outcome": "handled"},
        ),
    ],
    "sandbox_gateway": [
        ("paystream_sandbox_webhook_attempts_total", {"outcome": "delivered"}),
    ],
}

# Gauges (and counters that only rarely move) each owning service exports from its start.
EXPORTED: Mapping[str, list[str]] = {
    "intake_api": ["paystream_outbox_pending", "paystream_outbox_oldest_pending_age_seconds"],
    "gateway_worker": ["paystream_dlq_messages"],
    "ledger": [
        "paystream_dlq_messages",
        "paystream_payments_pending",
        "paystream_payments_pending_oldest_age_seconds",
        "paystream_late_successes_total",
        "paystream_amount_mismatches_total",
    ],
}
# Labelled counters with no sample until their first event: their declaration must be there.
DECLARED: Mapping[str, list[str]] = {
    "gateway_worker": ["paystream_gateway_errors", "paystream_message_retries"],
    "ledger": ["paystream_message_retries"],
}

CONTRACT_NAMES = {
    "paystream_payments_created_total",
    "paystream_payments_completed_total",
    "paystream_payment_completion_seconds_bucket",
    "paystream_webhooks_received_total",
    "paystream_outbox_pending",
    "paystream_http_request_duration_seconds_bucket",
}


@dataclass(frozen=True)
class BeforeAndAfter:
    before: dict[str, Scrape]
    after: dict[str, Scrape]


@pytest.fixture(scope="module")
async def scrapes(stack: Stack) -> BeforeAndAfter:
    """Every service scraped, then one payment paid with 4242 to SUCCEEDED, then every service scraped again."""
    async with aiohttp.ClientSession() as http:
        before = await scrape_all(http, stack)
        intake = IntakeClient(http, stack.url("intake_api"))
        status, payment, _ = await intake.create(wait=10)
        assert status == 201, payment
        await simulate_card(http, payment["checkout_url"], "4242424242424242")
        assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"

        async def ledger_counted() -> bool:
            # The ledger counts right after its commit, which the intake may have read a moment earlier.
            ledger = await scrape(http, stack.url("ledger"))
            wanted = ("paystream_payments_completed_total", {"status": "SUCCEEDED"})
            return ledger.value(wanted[0], **wanted[1]) > before["ledger"].value(wanted[0], **wanted[1])

        await eventually(ledger_counted, timeout=10, what="the ledger counting the completion")
        return BeforeAndAfter(before, await scrape_all(http, stack))


@pytest.mark.parametrize("service", sorted(COUNTED))
def test_one_payment_grows_the_counters_of_the_services_on_its_path(scrapes: BeforeAndAfter, service: str) -> None:
    before, after = scrapes.before[service], scrapes.after[service]
    for name, labels in COUNTED[service]:
        grown = after.value(name, **labels) - before.value(name, **labels)
        assert grown >= 1, f"{service}: {name}{labels} grew by {grown}"


@pytest.mark.parametrize("service", sorted(EXPORTED))
def test_each_service_exports_the_gauges_and_counters_it_owns(scrapes: BeforeAndAfter, service: str) -> None:
    scrape = scrapes.after[service]
    missing = [name for name in EXPORTED[service] if not scrape.has(name)]
    assert missing == [], f"{service} does not export {missing}"


@pytest.mark.parametrize("service", sorted(DECLARED))
def test_labelled_counters_for_rare_events_are_declared(scrapes: BeforeAndAfter, service: str) -> None:
    missing = set(DECLARED[service]) - scrapes.after[service].families
    assert not missing, f"{service} does not declare {sorted(missing)}"


def test_each_dlq_gauge_names_its_own_queue(scrapes: BeforeAndAfter, stack: Stack) -> None:
    namespace = stack.env["BROKER_NAMESPACE"]
    for service in ("gateway_worker", "ledger"):
        assert scrapes.after[service].has("paystream_dlq_messages", queue=f"{namespace}.{service}.dlq"), service


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_every_service_exports_its_http_request_durations(scrapes: BeforeAndAfter, service: str) -> None:
    assert scrapes.after[service].has("paystream_http_request_duration_seconds_count"), service


def test_every_metric_the_contract_names_is_exported_with_its_labels(scrapes: BeforeAndAfter) -> None:
    exported = {name for scrape in scrapes.after.values() for name, _ in scrape.samples}
    assert CONTRACT_NAMES <= exported, sorted(CONTRACT_NAMES - exported)
    ledger, webhooks = scrapes.after["ledger"], scrapes.after["webhook_receiver"]
    assert ledger.has("paystream_payments_completed_total", status="SUCCEEDED")
    assert webhooks.has("paystream_webhooks_received_total", provider="sandbox", outcome="accepted")


# The metric-by-service table of docs/reference/observability.md: the only paystream_* families each service may
# declare (issue 13 §4).
OWNED: Mapping[str, set[str]] = {
    "intake_api": {
        "paystream_payments_created",
        "paystream_refunds_requested",
        "paystream_outbox_pending",
        "paystream_outbox_oldest_pending_age_seconds",
        "paystream_outbox_published",
        "paystream_events_processed",
        "paystream_event_processing_seconds",
    },
    "gateway_worker": {
        "paystream_gateway_request_duration_seconds",
        "paystream_gateway_errors",
        "paystream_amount_mismatches",
        "paystream_events_processed",
        "paystream_event_processing_seconds",
        "paystream_message_retries",
        "paystream_dlq_messages",
    },
    "webhook_receiver": {"paystream_webhooks_received"},
    "ledger": {
        "paystream_payments_completed",
        "paystream_payment_completion_seconds",
        "paystream_payments_pending",
        "paystream_payments_pending_oldest_age_seconds",
        "paystream_late_successes",
        "paystream_amount_mismatches",
        "paystream_expirations_requested",
        "paystream_reconciliations_requested",
        "paystream_authorizations_open",
        "paystream_authorizations_expiring_soon",
        "paystream_authorizations_closed",
        "paystream_authorization_amount_captured",
        "paystream_refunds",
        "paystream_refund_amount",
        "paystream_refund_completion_seconds",
        "paystream_refund_contradictions",
        "paystream_refunds_pending",
        "paystream_refunds_pending_oldest_age_seconds",
        "paystream_refund_reconciliations_requested",
        "paystream_events_processed",
        "paystream_event_processing_seconds",
        "paystream_message_retries",
        "paystream_dlq_messages",
    },
    "notifier": {
        "paystream_webhook_deliveries",
        "paystream_webhook_attempt_duration_seconds",
        "paystream_webhook_oldest_undelivered_age_seconds",
        "paystream_webhook_endpoints_disabled",
        "paystream_events_processed",
        "paystream_event_processing_seconds",
        "paystream_message_retries",
        "paystream_dlq_messages",
    },
    "sandbox_gateway": {"paystream_sandbox_webhook_attempts"},
    "storefront": set(),
    "console": set(),
}


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_each_service_exports_only_the_metrics_it_owns(scrapes: BeforeAndAfter, service: str) -> None:
    # The text parser reports each counter's and histogram's `_created` timestamps as a family of their own.
    # Every process times its requests and counts its loops' restarts (shared/supervisor.py).
    allowed = OWNED[service] | {"paystream_http_request_duration_seconds", "paystream_loop_restarts"}
    declared = {
        name if name in allowed else name.removesuffix("_created")
        for name in scrapes.after[service].families
        if name.startswith("paystream_")
    }
    foreign = declared - allowed
    assert not foreign, f"{service} exports metrics it does not own: {sorted(foreign)}"
