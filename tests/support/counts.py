"""The work a benchmark run made each part of the system do, counted where that part counts it (for `make bench`).

- RabbitMQ: its own counters, from the rabbitmq_prometheus plugin (port 15692 on the broker's host). The per-object
  ones (`/metrics/detailed`, labelled by exchange and queue) are read for this run's namespace alone: messages
  published to its exchanges, copies routed into its queues (a delay queue's retries included) and deliveries to
  its consumers. The node-wide `rabbitmq_global_messages_*` are read beside them; on a broker that other runs share,
  those count their messages too.
- PostgreSQL: `pg_stat_database` for this run's database (commits, rollbacks) and `pg_stat_wal` (WAL bytes; a
  server-wide figure: other databases on the server add to it).
- HTTP: each of our services' `paystream_http_request_duration_seconds` counts (requests served, its own scrapes
  and health checks left out), and the requests it made: `paystream_gateway_request_duration_seconds` (to the
  provider) and `paystream_webhook_attempt_duration_seconds` (to merchants).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import asyncpg

PROMETHEUS_PORT = 15692
_DETAILED = "/metrics/detailed?family=channel_exchange_metrics&family=channel_queue_metrics" + (
    "&family=channel_queue_exchange_metrics"
)
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# Routes that are not the payment's: the bench's own scrapes and the services' health checks.
_NOT_TRAFFIC = ("/metrics", "/healthz", "/readyz", "/livez", "/health")


def samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a Prometheus text exposition."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        yield match["name"], labels, float(match["value"])


def broker_counts(detailed: str, global_text: str, namespace: str) -> dict[str, float]:
    """The namespace's messages published, routed into its queues and delivered; and the node's global counters."""
    prefix = namespace + "."
    counts = {
        "rabbitmq: published to this run's exchanges": 0.0,
        "rabbitmq: routed into this run's queues": 0.0,
        "rabbitmq: delivered from this run's queues": 0.0,
        "rabbitmq: acked on this run's queues": 0.0,
    }
    for name, labels, value in samples(detailed):
        if name == "rabbitmq_detailed_channel_messages_published_total" and labels.get("exchange", "").startswith(
            prefix
        ):
            counts["rabbitmq: published to this run's exchanges"] += value
        elif name == "rabbitmq_detailed_queue_messages_published_total" and labels.get("queue", "").startswith(prefix):
            counts["rabbitmq: routed into this run's queues"] += value
        elif name in (
            "rabbitmq_detailed_channel_messages_delivered_ack_total",
            "rabbitmq_detailed_channel_messages_delivered_total",
        ) and labels.get("queue", "").startswith(prefix):
            counts["rabbitmq: delivered from this run's queues"] += value
        elif name == "rabbitmq_detailed_channel_messages_acked_total" and labels.get("queue", "").startswith(prefix):
            counts["rabbitmq: acked on this run's queues"] += value
    node = {
        "rabbitmq_global_messages_received_total": "rabbitmq (node): rabbitmq_global_messages_received_total",
        "rabbitmq_global_messages_routed_total": "rabbitmq (node): rabbitmq_global_messages_routed_total",
        "rabbitmq_global_messages_delivered_total": "rabbitmq (node): rabbitmq_global_messages_delivered_total",
    }
    for key in node.values():
        counts[key] = 0.0
    for name, _, value in samples(global_text):
        if name in node:
            counts[node[name]] += value
    return counts


def http_counts(metrics_by_service: dict[str, str]) -> dict[str, float]:
    """Requests each of our services served (its scrapes and health checks left out), and the requests they made."""
    counts: dict[str, float] = {}
    made_to_provider = made_to_merchants = 0.0
    for service, text in metrics_by_service.items():
        served = 0.0
        for name, labels, value in samples(text):
            if name == "paystream_http_request_duration_seconds_count":
                if not any(labels.get("route", "").startswith(route) for route in _NOT_TRAFFIC):
                    served += value
            elif name == "paystream_gateway_request_duration_seconds_count":
                made_to_provider += value
            elif name == "paystream_webhook_attempt_duration_seconds_count":
                made_to_merchants += value
        if served:
            counts[f"http: requests served by {service}"] = served
    counts["http: requests our services served"] = sum(counts.values())
    counts["http: requests to the provider"] = made_to_provider
    counts["http: requests to merchants (webhook attempts)"] = made_to_merchants
    return counts


@dataclass
class WorkCounter:
    """Reads the counters above for one run: its namespace, its database, its services' /metrics."""

    amqp_url: str
    namespace: str
    database_url: str
    service_urls: dict[str, str]

    @property
    def prometheus_url(self) -> str:
        return f"http://{urlsplit(self.amqp_url).hostname or '127.0.0.1'}:{PROMETHEUS_PORT}"

    async def ensure_prometheus(self) -> str:
        """Where the broker's Prometheus plugin answers; enables it (`rabbitmq-plugins enable`) on a local broker
        that does not have it yet. Raises with the reason when it cannot be read."""
        async with aiohttp.ClientSession() as session:
            for attempt in range(2):
                try:
                    async with session.get(self.prometheus_url + "/metrics") as response:
                        if response.status == 200:
                            return "rabbitmq_prometheus plugin"
                except aiohttp.ClientError:
                    pass
                plugins = shutil.which("rabbitmq-plugins")
                if (
                    attempt == 1
                    or plugins is None
                    or urlsplit(self.amqp_url).hostname not in ("127.0.0.1", "localhost")
                ):
                    break
                process = await asyncio.create_subprocess_exec(
                    plugins,
                    "enable",
                    "rabbitmq_prometheus",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                await process.wait()
                await asyncio.sleep(2)
        raise RuntimeError(
            f"RabbitMQ's Prometheus plugin does not answer at {self.prometheus_url}:"
            " run `rabbitmq-plugins enable rabbitmq_prometheus` on the broker"
        )

    async def read(self) -> dict[str, float]:
        """Every counter so far."""
        async with aiohttp.ClientSession() as session:

            async def text(url: str) -> str:
                try:
                    async with session.get(url) as response:
                        return await response.text()
                except aiohttp.ClientError:
                    return ""

            detailed, global_text, *service_texts = await asyncio.gather(
                text(self.prometheus_url + _DETAILED),
                text(self.prometheus_url + "/metrics"),
                *(text(url + "/metrics") for url in self.service_urls.values()),
            )
        counts = broker_counts(detailed, global_text, self.namespace)
        counts.update(http_counts(dict(zip(self.service_urls, service_texts, strict=True))))
        conn = await asyncpg.connect(self.database_url)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            wal = await conn.fetchval("SELECT wal_bytes FROM pg_stat_wal")
        finally:
            await conn.close()
        assert row is not None
        counts["postgresql: commits in this run's database"] = float(row["xact_commit"])
        counts["postgresql: rollbacks in this run's database"] = float(row["xact_rollback"])
        counts["postgresql: WAL bytes (whole server)"] = float(wal)
        return counts
