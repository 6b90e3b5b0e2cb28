"""`make bench`'s counters: read from Prometheus text for one run's namespace and one set of services only."""

from __future__ import annotations

from tests.support.counts import broker_counts, http_counts, samples

DETAILED = """\
# TYPE rabbitmq_detailed_channel_messages_published_total counter
rabbitmq_detailed_channel_messages_published_total{channel="<0.1.0>",vhost="/",exchange="run1.events"} 12
rabbitmq_detailed_channel_messages_published_total{channel="<0.2.0>",vhost="/",exchange="run1.events"} 3
rabbitmq_detailed_channel_messages_published_total{channel="<0.3.0>",vhost="/",exchange="run10.events"} 500
rabbitmq_detailed_channel_messages_published_total{channel="<0.3.0>",vhost="/",exchange=""} 7
rabbitmq_detailed_queue_messages_published_total{channel="<0.1.0>",queue="run1.ledger",exchange="run1.events"} 15
rabbitmq_detailed_queue_messages_published_total{channel="<0.3.0>",queue="run1.ledger.delay.2",exchange=""} 2
rabbitmq_detailed_channel_messages_delivered_ack_total{channel="<0.4.0>",vhost="/",queue="run1.ledger"} 14
rabbitmq_detailed_channel_messages_delivered_ack_total{channel="<0.5.0>",vhost="/",queue="other.ledger"} 99
rabbitmq_detailed_channel_messages_acked_total{channel="<0.4.0>",vhost="/",queue="run1.ledger"} 13
"""
GLOBAL = """\
rabbitmq_global_messages_received_total{protocol="amqp091"} 1000
rabbitmq_global_messages_delivered_total{protocol="amqp091",queue_type="rabbit_quorum_queue"} 600
rabbitmq_global_messages_delivered_total{protocol="amqp091",queue_type="rabbit_classic_queue"} 40
"""


def test_broker_counts_are_the_namespaces_alone_beside_the_nodes_global_ones() -> None:
    counts = broker_counts(DETAILED, GLOBAL, "run1")
    assert counts["rabbitmq: published to this run's exchanges"] == 15  # not run10's, not the default exchange's
    assert counts["rabbitmq: routed into this run's queues"] == 17  # a retry into a delay queue is routed too
    assert counts["rabbitmq: delivered from this run's queues"] == 14
    assert counts["rabbitmq: acked on this run's queues"] == 13
    assert counts["rabbitmq (node): rabbitmq_global_messages_received_total"] == 1000
    assert counts["rabbitmq (node): rabbitmq_global_messages_delivered_total"] == 640


def test_http_counts_leave_out_scrapes_and_health_checks_and_read_routes_with_braces() -> None:
    receiver = (
        'paystream_http_request_duration_seconds_count{method="POST",route="/webhooks/{provider}",status="200"} 40.0\n'
        'paystream_http_request_duration_seconds_count{method="GET",route="/metrics",status="200"} 9.0\n'
        'paystream_http_request_duration_seconds_count{method="GET",route="/readyz",status="200"} 3.0\n'
    )
    worker = 'paystream_gateway_request_duration_seconds_count{provider="sandbox",operation="create"} 41.0\n'
    counts = http_counts({"webhook_receiver": receiver, "gateway_worker": worker})
    assert counts["http: requests served by webhook_receiver"] == 40
    assert "http: requests served by gateway_worker" not in counts
    assert counts["http: requests our services served"] == 40
    assert counts["http: requests to the provider"] == 41
    assert counts["http: requests to merchants (webhook attempts)"] == 0


def test_samples_skip_comments_and_read_unlabelled_samples() -> None:
    assert list(samples("# HELP x y\nup 1\n")) == [("up", {}, 1.0)]
