"""`python -m shared.stack prepare`: what `make run` and `make test` do before starting anything.

Checks that PostgreSQL and RabbitMQ answer (failing fast, naming the URL tried and how to start one),
creates the database if missing, applies every service's migrations and declares the broker topology.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from shared.broker import Broker
from shared.config import SERVICE_NAMES, Settings, load_settings
from shared.db import prepare_database
from shared.runtime import redact_url

HOW_TO_START = "start them with `docker compose up -d rabbitmq postgres` (or your system's services)"
DEPENDENCY_TIMEOUT = 6.0


async def _check_postgres(settings: Settings) -> str | None:
    try:
        await asyncio.wait_for(prepare_database(settings.database_url, SERVICE_NAMES), DEPENDENCY_TIMEOUT)
    except Exception as exc:
        return f"PostgreSQL is unreachable at {redact_url(settings.database_url)} ({type(exc).__name__}: {exc})"
    return None


async def _check_rabbitmq(settings: Settings) -> str | None:
    broker = Broker(settings.amqp_url, settings.broker_namespace, name="paystream-prepare")
    try:
        await asyncio.wait_for(broker.connect(timeout=DEPENDENCY_TIMEOUT), DEPENDENCY_TIMEOUT)
        await broker.declare_topology()
    except Exception as exc:
        return f"RabbitMQ is unreachable at {redact_url(settings.amqp_url)} ({type(exc).__name__}: {exc})"
    finally:
        try:
            await asyncio.wait_for(broker.close(), 2)
        except Exception:
            pass
    return None


async def prepare(settings: Settings) -> list[str]:
    results = await asyncio.gather(_check_postgres(settings), _check_rabbitmq(settings))
    return [r for r in results if r]


def urls(settings: Settings) -> str:
    return "\n".join(
        [
            "Paystream is starting:",
            f"  storefront (the demo shop)   {settings.storefront_base_url}/",
            f"  intake API                   {settings.intake_base_url}/openapi.json",
            f"  sandbox gateway              {settings.sandbox_checkout_base}/healthz  (hosted pages at /pay/<intent>)",
            f"  webhook receiver             http://localhost:{settings.webhook_port}/healthz",
            f"  ledger (health, metrics)     http://localhost:{settings.ledger_port}/metrics",
            f"  gateway worker               http://localhost:{settings.gateway_worker_port}/metrics",
            "Pay with card 4242 4242 4242 4242 (any future expiry, any CVC). Ctrl-C stops everything.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.stack")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("--print-urls", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    problems = asyncio.run(prepare(settings))
    if problems:
        for problem in problems:
            sys.stderr.write(f"paystream: {problem}\n")
        sys.stderr.write(f"paystream: {HOW_TO_START}\n")
        raise SystemExit(1)
    print(f"paystream: database and broker ready (namespace {settings.broker_namespace!r})")
    if args.print_urls:
        print(urls(settings))


if __name__ == "__main__":
    main()
