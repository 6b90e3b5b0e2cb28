"""A merchant webhook delivery joins its payment's trace (issue 11, docs/reference/observability.md): POST
/v1/payments, the ledger
recording it, the notifier's delivery and its HTTP POST to the shop are one trace."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.e2e.test_merchant_webhooks import attempts, call, holds, payment_events, register
from tests.support.client import IntakeClient, payment_body
from tests.support.infra import Servers, create_database, delete_namespace, drop_database, unique_name
from tests.support.merchant_receiver import MerchantReceiver
from tests.support.otlp_receiver import OtlpReceiver, span_tree
from tests.support.processes import Stack, eventually, stack_environment


async def test_a_delivery_is_traced_under_the_payment_that_caused_it(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("psnotify")
    async with OtlpReceiver() as spans, aiohttp.ClientSession() as http:
        env = stack_environment(
            database_url,
            servers.amqp_url,
            namespace,
            OTEL_EXPORTER_OTLP_ENDPOINT=spans.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        stack = Stack(env, tmp_path_factory.mktemp("notify-traced"), services=("intake_api", "ledger", "notifier"))
        shop = MerchantReceiver()
        try:
            await stack.start()
            await shop.start()
            api = IntakeClient(http, stack.url("intake_api"))
            endpoint = await register(api, shop.url, ["payment.created"])
            _, payment, _ = await api.create(payment_body(), wait=0)
            event = (await payment_events(api, payment["id"], 1))[0]
            await eventually(holds(lambda: shop.delivered(event["id"])), timeout=30, what="the delivery")
            await attempts(api, event["id"], endpoint["id"])
            assert (await call(api, "DELETE", f"/v1/webhook_endpoints/{endpoint['id']}"))[0] == 204
            await asyncio.to_thread(stack.stop)  # flushes every process's spans to the receiver
        finally:
            await shop.stop()
            await asyncio.to_thread(stack.stop)
            await delete_namespace(servers.amqp_url, namespace)
            await drop_database(database_url)

        (post,) = [s for s in spans.spans if s.service == "intake-api" and s.name == "POST /v1/payments"]
        trace = spans.traces()[post.trace_id]
        print(span_tree(trace))
        notifier = [s for s in trace if s.service == "notifier"]
        # The first attempt is made as the ledger record is consumed (no delivery command is queued for it).
        assert any(s.kind == "CONSUMER" and "ledger.status_recorded" in s.name for s in notifier), notifier
        outgoing = [s for s in notifier if s.kind == "CLIENT" and s.name.startswith("POST")]
        assert outgoing, f"no HTTP POST to the shop in the payment's trace: {[str(s) for s in notifier]}"
        assert any(s.service == "ledger" for s in trace)
