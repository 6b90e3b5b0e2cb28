"""`python -m tools.stack prepare`: what `make run` and `make test` do before starting anything.

Checks that PostgreSQL and RabbitMQ answer (failing fast, naming the URL tried and how to start one),
creates the database if missing, applies every service's migrations and declares the broker topology.

`python -m tools.stack procfile --replicas N` writes the Procfile `make run` runs: N processes of every
service but the sandbox, replica k listening on its service's port + 1000 * (k - 1).

`python -m tools.stack foreground <procfile> <directory>` runs it (tools/runner.py): a process that exits is
restarted, the others keep running; Ctrl-C stops them all and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shared.broker import Broker
from shared.config import SERVICE_NAMES, SERVICES, BrokerSettings, CommonSettings, DatabaseSettings, load_settings
from shared.consumers import CONSUMER_GROUPS
from shared.db import MigrationChanged, prepare_database
from shared.runtime import authentication_refused, redact_url
from tools import runner
from tools.settings_reference import settings_classes

HOW_TO_START = "start them with `docker compose up -d rabbitmq postgres` (or your system's services)"
DEPENDENCY_TIMEOUT = 6.0
DEMO_API_KEY = "sk_test_demo"  # the default of INTAKE_API_KEYS (docs/reference/configuration.md)
REPLICA_PORT_STEP = 1000  # replica k of a service listens on its port + 1000 * (k - 1): 8080, 9080, 10080...
S = TypeVar("S", bound=CommonSettings)


@dataclass(frozen=True)
class Stack:
    """Every service's own settings, read from one environment: what `make run` starts on this machine."""

    services: Mapping[str, CommonSettings]

    @classmethod
    def from_environment(cls) -> Stack:
        """Each service's settings from the environment (and `.env`); an invalid value stops with one line."""
        return cls({name: load_settings(settings) for name, settings in settings_classes()})

    @classmethod
    def of(cls, **values: Any) -> Stack:
        """Each service's settings with these values for the variables it reads (the rest from the environment;
        `_env_file=None` ignores `.env`)."""
        services = {}
        for name, settings in settings_classes():
            known = {k: v for k, v in values.items() if k in settings.model_fields or k == "_env_file"}
            services[name] = settings(**known)
        return cls(services)

    def settings(self, name: str, kind: type[S]) -> S:
        """Service `name`'s settings, as the kind of settings it is."""
        found = self.services[name]
        if not isinstance(found, kind):
            raise TypeError(f"{name}'s settings are no {kind.__name__}")
        return found

    def port(self, name: str) -> int:
        """The HTTP port service `name` listens on."""
        service = next(s for s in SERVICES if s.name == name)
        return int(getattr(self.services[name], service.port_setting))


class PrepareSettings(DatabaseSettings, BrokerSettings):
    """What `prepare` reads: the database every service shares (each in its own schema), and the broker."""


def _failure(what: str, url: str, exc: BaseException) -> str:
    """One line: refused credentials said as such (starting a server would not help), else unreachable."""
    if authentication_refused(exc):
        parts = urlsplit(url)
        return f"{what}: authentication refused for {parts.username or '(no user)'} at {parts.hostname}:{parts.port}"
    return f"{what} is unreachable at {redact_url(url)} ({type(exc).__name__}: {exc})"


async def _check_postgres(settings: DatabaseSettings) -> str | None:
    url = settings.database_url.get_secret_value()
    try:
        await asyncio.wait_for(prepare_database(url, SERVICE_NAMES), DEPENDENCY_TIMEOUT)
    except MigrationChanged as exc:
        return str(exc)
    except Exception as exc:
        return _failure("PostgreSQL", url, exc)
    return None


async def _check_rabbitmq(settings: BrokerSettings) -> str | None:
    url = settings.amqp_url.get_secret_value()
    broker = Broker(url, settings.broker_namespace, name="paystream-prepare")
    try:
        await asyncio.wait_for(broker.connect(timeout=DEPENDENCY_TIMEOUT), DEPENDENCY_TIMEOUT)
        await broker.declare_topology(CONSUMER_GROUPS)
    except Exception as exc:
        return _failure("RabbitMQ", url, exc)
    finally:
        try:
            await asyncio.wait_for(broker.close(), 2)
        except Exception:
            pass
    return None


async def prepare(settings: PrepareSettings) -> list[str]:
    """Create and migrate the database and declare the broker's topology; a line per problem."""
    results = await asyncio.gather(_check_postgres(settings), _check_rabbitmq(settings))
    return [r for r in results if r]


def replica_ports(stack: Stack, name: str, replicas: int) -> list[int]:
    """The port of each replica of service `name` when `replicas` of it run on this machine."""
    service = next(s for s in SERVICES if s.name == name)
    base = stack.port(name)
    count = replicas if service.replicated else 1
    return [base + REPLICA_PORT_STEP * k for k in range(count)]


def procfile(stack: Stack, replicas: int = 1) -> str:
    """The Procfile for `replicas` of every service: one line per process, each replica on its own port."""
    lines = []
    for service in SERVICES:
        ports = replica_ports(stack, service.name, replicas)
        for k, port in enumerate(ports, start=1):
            label = service.name if k == 1 else f"{service.name}-{k}"  # honcho's names allow no dot
            override = "" if k == 1 else f"{service.port_variable}={port} "
            lines.append(f"{label}: {override}python -m services.{service.name}")
    return "\n".join(lines) + "\n"


def _console_key_hint(stack: Stack) -> str:
    """The demo key, printed for signing in to the console; a key of one's own is never printed."""
    from services.intake_api.settings import IntakeSettings

    key = stack.settings("intake_api", IntakeSettings).intake_api_keys[0][1].get_secret_value()
    return f"sign in with {key}" if key == DEMO_API_KEY else "sign in with an API key of INTAKE_API_KEYS"


def urls(stack: Stack, replicas: int = 1) -> str:
    """What `make run` prints: where each service is reached."""
    from services.console.settings import ConsoleSettings
    from services.sandbox_gateway.settings import SandboxGatewaySettings
    from services.storefront.settings import StorefrontSettings

    shop = stack.settings("storefront", StorefrontSettings)
    console = stack.settings("console", ConsoleSettings)
    sandbox = stack.settings("sandbox_gateway", SandboxGatewaySettings)

    def ports(name: str) -> str:
        extra = replica_ports(stack, name, replicas)[1:]
        return f"  (replicas on {', '.join(map(str, extra))})" if extra else ""

    return "\n".join(
        [
            "Paystream is starting:",
            f"  storefront (the demo shop)   {shop.storefront_base_url}/{ports('storefront')}",
            f"  console (merchant dashboard) {console.console_base_url}/{ports('console')}"
            f"  ({_console_key_hint(stack)})",
            f"  intake API                   {shop.intake_base_url}/openapi.json{ports('intake_api')}",
            f"  sandbox gateway              {sandbox.sandbox_checkout_base}/healthz  (hosted pages at /pay/<intent>)",
            f"  webhook receiver             http://localhost:{stack.port('webhook_receiver')}/healthz"
            f"{ports('webhook_receiver')}",
            f"  ledger (health, metrics)     http://localhost:{stack.port('ledger')}/metrics{ports('ledger')}",
            f"  gateway worker               http://localhost:{stack.port('gateway_worker')}/metrics"
            f"{ports('gateway_worker')}",
            f"  notifier (merchant webhooks) http://localhost:{stack.port('notifier')}/metrics{ports('notifier')}",
            "Pay with card 4242 4242 4242 4242 (any future expiry, any CVC). Ctrl-C stops everything.",
        ]
    )


def main() -> None:
    if sys.argv[1:2] == ["foreground"]:  # python -m tools.stack foreground <procfile> <directory>
        raise SystemExit(runner.run_foreground(sys.argv[2], sys.argv[3]))
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    parser.add_argument("command", choices=["prepare", "procfile"])
    parser.add_argument("--print-urls", action="store_true")
    parser.add_argument("--replicas", type=int, default=1, help="processes of each service but the sandbox")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    if args.command == "procfile":
        sys.stdout.write(procfile(Stack.from_environment(), args.replicas))
        return
    settings = load_settings(PrepareSettings)
    problems = asyncio.run(prepare(settings))
    if problems:
        for problem in problems:
            sys.stderr.write(f"paystream: {problem}\n")
        if any("unreachable" in problem for problem in problems):
            sys.stderr.write(f"paystream: {HOW_TO_START}\n")
        raise SystemExit(1)
    print(f"paystream: database and broker ready (namespace {settings.broker_namespace!r})")
    if args.print_urls:
        print(urls(Stack.from_environment(), args.replicas))


if __name__ == "__main__":
    main()
