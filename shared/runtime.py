"""Starting a service process: settings, logs, traces, then its aiohttp application until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

from shared.broker import Broker
from shared.config import SERVICES_BY_NAME, Settings, load_settings
from shared.db import MigrationChanged, create_pool, prepare_database, schemas_missing
from shared.logs import configure_logging, get_logger
from shared.telemetry import configure_tracing, shutdown_tracing

T = TypeVar("T")


def run_service(
    name: str,
    build_app: Callable[[Settings], web.Application],
    port: Callable[[Settings], int] | None = None,
    host: Callable[[Settings], str] = lambda settings: settings.http_host,
) -> None:
    """Run one service in the foreground; every service's `__main__` is this one call.

    It listens on `host(settings)` (HTTP_HOST unless the service says) and on the port its entry in
    `shared.config.SERVICES` names, unless `port` says otherwise.
    """
    service = SERVICES_BY_NAME[name]
    settings = load_settings()
    configure_logging(service.trace_name, fmt=settings.log_format, level=settings.log_level)
    configure_tracing(service.trace_name, settings.otel_exporter_otlp_endpoint)
    log = get_logger(name)
    app = build_app(settings)
    listen_port = port(settings) if port is not None else int(getattr(settings, service.port_setting))
    log.info("service starting", port=listen_port)
    try:
        web.run_app(
            app,
            host=host(settings),
            port=listen_port,
            shutdown_timeout=5,
            print=None,
            access_log=None,
            handle_signals=True,
        )
    except MigrationChanged as exc:
        log.error("schema does not match the code; stopping", error=str(exc))
        sys.stderr.write(f"paystream: {exc}\n")
        raise SystemExit(1) from None
    finally:
        shutdown_tracing()
        log.info("service stopped")


async def retry_until_up(what: str, url: str, connect: Callable[[], Awaitable[T]], *, within: float = 30.0) -> T:
    """Connect, retrying with backoff while the dependency is starting; give up after `within` seconds."""
    log = get_logger(__name__)
    deadline = asyncio.get_running_loop().time() + within
    delay = 0.25
    while True:
        try:
            return await connect()
        except MigrationChanged:
            raise  # waiting will not fix it
        except Exception as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise RuntimeError(f"{what} unreachable at {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
            log.warning("waiting for dependency", dependency=what, url=redact_url(url), error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@asynccontextmanager
async def database(
    settings: Settings,
    migrations: Iterable[str],
    *,
    reads: Iterable[str] = (),
    schema_wait_seconds: float = 60.0,
    **pool_args: Any,
) -> AsyncIterator[asyncpg.Pool]:
    """The database ready for this service: created if missing, its own migrations applied, pooled; closed on exit.

    Each schema has one deployer, the service that owns it. A service that also reads another's schema
    (`reads`) waits, up to `schema_wait_seconds`, until its owner has deployed it.
    """
    await retry_until_up(
        "PostgreSQL", settings.database_url, lambda: prepare_database(settings.database_url, migrations)
    )
    await _wait_for_schemas(settings.database_url, list(reads), schema_wait_seconds)
    pool = await create_pool(settings.database_url, **pool_args)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def broker(settings: Settings, name: str) -> AsyncIterator[Broker]:
    """A connected broker with the whole topology declared; closed on exit."""
    instance = Broker(settings.amqp_url, settings.broker_namespace, name=name)
    await retry_until_up("RabbitMQ", settings.amqp_url, instance.connect)
    try:
        await instance.declare_topology()
        yield instance
    finally:
        await instance.close()


async def _wait_for_schemas(url: str, owners: list[str], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while missing := await schemas_missing(url, owners):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(
                f"the schema of {', '.join(missing)} is not deployed: start that service once"
                " (or run `python -m shared.stack prepare`)"
            )
        get_logger(__name__).warning("waiting for a schema this service reads", owners=missing)
        await asyncio.sleep(0.5)


async def pool_ready(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=2) as conn:
        return bool(await conn.fetchval("SELECT true", timeout=2))


async def cancel_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_periodically(name: str, interval: float, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work` every `interval` seconds until cancelled; a failed round is logged and retried next time."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            get_logger(__name__).warning("periodic task failed", task=name, error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
