"""No secret reaches the tracing backend (issue 14 §5), even when a careless client puts one in a query string.

Every service exports its spans to an OTLP receiver while a payment is paid with a test card and clients send
card numbers, API keys and secrets in query strings to every service; then every attribute of every span is
searched for them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import IntakeClient, simulate_card
from tests.support.infra import Servers
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.own_stack import own_stack
from tests.support.processes import ALL_SERVICES, eventually

CARD = "4242424242424242"
DECLINED = "4000000000000002"
SECRETS = (
    CARD,
    "4242 4242 4242 4242",
    DECLINED,
    "sk_test_demo",
    "sk_test_other",
    "whsec_sandbox_dev",
)
CARELESS_QUERY = f"card_number={CARD}&api_key=sk_test_demo&secret=whsec_sandbox_dev&other=sk_test_other"


@pytest.fixture(scope="module")
async def exported(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[ReceivedSpan]]:
    async with (
        OtlpReceiver() as receiver,
        own_stack(
            servers, tmp_path_factory.mktemp("secrets"), ALL_SERVICES, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        ) as stack,
    ):
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            status, payment, _ = await intake.create(wait=10)
            assert status == 201 and payment["checkout_url"], payment
            # The careless client: secrets in the query string of a GET to the hosted page, the API, each
            # service's health and metrics.
            async with http.get(f"{payment['checkout_url']}?{CARELESS_QUERY}") as page:
                assert page.status == 200
            async with http.get(
                f"{intake.base_url}/v1/payments/{payment['id']}?{CARELESS_QUERY}", headers=intake.headers()
            ) as read:
                assert read.status == 200
            for name in ALL_SERVICES:
                async with http.get(f"{stack.url(name)}/healthz?{CARELESS_QUERY}") as health:
                    assert health.status == 200
            await simulate_card(http, payment["checkout_url"], CARD)
            assert (await intake.terminal(payment["id"]))["status"] == "SUCCEEDED"

            async def webhook_traced() -> bool:
                return any(s.service == "webhook-receiver" for s in receiver.spans)

            await eventually(webhook_traced, what="the webhook receiver's spans")
        # Stopping flushes every process's remaining spans to the receiver.
        await asyncio.to_thread(stack.stop)
        yield list(receiver.spans)


def test_spans_of_every_service_were_exported(exported: list[ReceivedSpan]) -> None:
    services = {span.service for span in exported}
    assert services >= {"intake-api", "gateway-worker", "sandbox-gateway", "webhook-receiver", "ledger", "storefront"}


def test_no_span_attribute_carries_a_card_number_key_or_secret(exported: list[ReceivedSpan]) -> None:
    for span in exported:
        text = json.dumps([span.name, span.attributes], default=str)
        leaked = [secret for secret in SECRETS if secret in text]
        assert not leaked, f"{span} carries {leaked}: {text[:400]}"


def test_query_strings_are_redacted_in_server_and_client_spans(exported: list[ReceivedSpan]) -> None:
    with_query = [
        (span, key, value)
        for span in exported
        for key, value in span.attributes.items()
        if key in ("http.url", "url.full", "http.target", "url.query") and "?" in str(value)
    ]
    assert with_query, "no span had a query string to redact: the careless requests were not traced"
    for span, key, value in with_query:
        assert str(value).endswith("?[redacted]"), f"{span}: {key}={value}"
