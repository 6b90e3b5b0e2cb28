"""Starting a service process: settings, logs, traces, then its aiohttp application until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiormq
import asyncpg
import stamina
import uvloop
from aiohttp import web

from shared.broker import Broker, ConsumerGroup
from shared.cancellation import being_cancelled
from shared.config import SERVICES_BY_NAME, Settings, load_settings
from shared.db import MigrationChanged, create_pool, prepare_database, schemas_missing
from shared.http_server import EdgeRunner, claim_port
from shared.logs import configure_logging, get_logger
from shared.metrics import service_registry
from shared.telemetry import configure_tracing, shutdown_tracing
from shared.web import BODY_TIMEOUT_SECONDS, ERROR_PAGE, METRICS_REGISTRY, READINESS_CHECKS, problem_page

T = TypeVar("T")
# How long a stopping service lets requests in flight finish (deploy/kubernetes waits longer before SIGKILL).
DRAIN_SECONDS = 5.0


class BackgroundTaskEnded(RuntimeError):
    """A task meant to run as long as the service ended (its error, or a stray cancellation): the service stops."""


# Failed (BackgroundTaskEnded) when the service must stop although nobody asked it to (see `serving`).
SERVICE_FAILED: web.AppKey[asyncio.Future[None]] = web.AppKey("service_failed")


class DependencyError(RuntimeError):
    """RabbitMQ or PostgreSQL cannot be used (unreachable, or refusing our credentials): the service stops."""


class SchemaNotDeployed(DependencyError):
    """A schema this service reads was not deployed by its owner in time: the service stops, naming the deployer."""


def run_service(
    name: str,
    build_app: Callable[[Settings], web.Application],
    port: Callable[[Settings], int] | None = None,
    host: Callable[[Settings], str] = lambda settings: settings.http_host,
) -> None:
    """Run one service in the foreground; every service's `__main__` is this one call.

    It listens on `host(settings)` (HTTP_HOST unless the service says) and on the port its entry in
    `shared.config.SERVICES` names, unless `port` says otherwise. The port is claimed before anything else, so
    a port in use stops the service with one line before it has connected to (or consumed from) anything; then
    the application starts (broker, database) and serves.
    """
    service = SERVICES_BY_NAME[name]
    settings = load_settings()
    configure_logging(service.trace_name, fmt=settings.log_format, level=settings.log_level)
    configure_tracing(service.trace_name, settings.otel_exporter_otlp_endpoint)
    log = get_logger(name)
    listen_port = port(settings) if port is not None else int(getattr(settings, service.port_setting))
    listen_host = host(settings)
    try:
        sock = claim_port(listen_host, listen_port)
    except OSError as exc:
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be listened on ({exc.strerror})"
        sys.stderr.write(f"paystream: {service.port_variable}: port {listen_port} on {listen_host} {reason}\n")
        raise SystemExit(2) from None
    app = build_app(settings)
    app[METRICS_REGISTRY] = service_registry(name)
    app[BODY_TIMEOUT_SECONDS] = settings.http_body_timeout_seconds
    log.info("service starting", port=listen_port)
    try:
        # uvloop's transports and callbacks cost a fraction of asyncio's pure-Python ones, on every socket
        # read and write of every request, message and query.
        uvloop.run(_serve(app, sock, settings, log))
    except DependencyError as exc:
        log.error("service cannot start", error=str(exc))
        sys.stderr.write(f"paystream: {exc}\n")
        raise SystemExit(1) from None
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except BackgroundTaskEnded as exc:
        sys.stderr.write(f"paystream: {exc}\n")
        raise SystemExit(1) from None
    except MigrationChanged as exc:
        log.error("schema does not match the code; stopping", error=str(exc))
        sys.stderr.write(f"paystream: {exc}\n")
        raise SystemExit(1) from None
    finally:
        sock.close()
        shutdown_tracing()
        log.info("service stopped")


async def _serve(app: web.Application, sock: socket.socket, settings: Settings, log: Any) -> None:
    """Start the application (its cleanup contexts connect to the broker and database), then accept
    connections on the claimed socket until SIGTERM/SIGINT."""
    runner = EdgeRunner(
        app,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=DRAIN_SECONDS,
        # aiohttp's keep-alive timer also runs from the start of each connection: a client still sending
        # its headers when it fires is disconnected. That makes it the header read timeout too.
        keepalive_timeout=settings.http_header_timeout_seconds,
        max_line_size=HEADER_LINE_LIMIT,
        max_field_size=HEADER_LINE_LIMIT,
        error_page=app.get(ERROR_PAGE, problem_page),
        max_connections=settings.http_max_connections,
    )
    failed = app[SERVICE_FAILED] = asyncio.get_running_loop().create_future()
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        log.info("service ready", port=sock.getsockname()[1])
        await failed  # until SIGTERM/SIGINT (GracefulExit), or until a background task ended
    finally:
        await runner.cleanup()


# The longest request line or header accepted (aiohttp's default): past it, 431.
HEADER_LINE_LIMIT = 8190


def authentication_refused(exc: BaseException) -> bool:
    """The dependency answered but refused our credentials: retrying will not help."""
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return True
    return isinstance(exc, aiormq.exceptions.ProbableAuthenticationError) or "ACCESS_REFUSED" in str(exc)


async def retry_until_up(what: str, url: str, connect: Callable[[], Awaitable[T]], *, within: float = 30.0) -> T:
    """Connect, retrying with backoff while the dependency is starting; give up after `within` seconds.

    Refused credentials stop at once with "authentication refused for <user> at <host:port>".
    """
    log = get_logger(__name__)
    try:
        # 0.25 s, doubling, at most 3 s apart (a little jitter, so replicas started together spread out).
        async for attempt in stamina.retry_context(
            on=_worth_waiting_for, attempts=None, timeout=within, wait_initial=0.25, wait_max=3.0, wait_jitter=0.1
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("waiting for dependency", dependency=what, url=redact_url(url), attempt=attempt.num)
                return await connect()
    except MigrationChanged:
        raise  # waiting will not fix it
    except Exception as exc:
        if authentication_refused(exc):
            parts = urlsplit(url.split(",", 1)[0])  # a list of cluster nodes: they share the credentials
            raise DependencyError(
                f"{what}: authentication refused for {parts.username or '(no user)'} "
                f"at {parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, '')}"
            ) from None
        raise DependencyError(f"{what} unreachable at {redact_url(url)}: {type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable: stamina either returns or raises")


def _worth_waiting_for(exc: Exception) -> bool:
    """A dependency still starting is waited for; a changed migration or refused credentials are not."""
    # The hook sees every exception, cancellation too: only errors (not a shutdown) are retried.
    return isinstance(exc, Exception) and not isinstance(exc, MigrationChanged) and not authentication_refused(exc)


DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "amqp": 5672, "amqps": 5671}


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) without passwords, fit for logs and error messages."""
    return ",".join(_redact_one(part) for part in url.split(","))


def _redact_one(url: str) -> str:
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
    **pool_args: Any,
) -> AsyncIterator[asyncpg.Pool]:
    """The database ready for this service: created if missing, its own migrations applied, pooled; closed on exit.

    Each schema has one deployer, the service that owns it. A service that also reads another's schema
    (`reads`) waits, up to SCHEMA_WAIT_SECONDS, until its owner has deployed it, then stops with one line naming
    the service (or command) that deploys it.
    """
    url = settings.database_url.get_secret_value()
    await retry_until_up("PostgreSQL", url, lambda: prepare_database(url, migrations))
    await _wait_for_schemas(url, list(reads), settings.schema_wait_seconds)
    pool = await create_pool(url, **pool_args)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def broker(settings: Settings, name: str, groups: Iterable[ConsumerGroup]) -> AsyncIterator[Broker]:
    """A connected broker with these consumer groups declared (services pass them all); closed on exit."""
    url = settings.amqp_url.get_secret_value()
    instance = Broker(url, settings.broker_namespace, name=name)
    await retry_until_up("RabbitMQ", url, instance.connect)
    try:
        await instance.declare_topology(groups)
        yield instance
    finally:
        await instance.close()


def deployers(owners: Iterable[str]) -> str:
    """Who deploys the schemas of `owners`: each owning service's start command, or the one that deploys them all."""
    services = ", ".join(f"`python -m services.{owner}`" for owner in owners)
    return f"start {services} (its owner deploys it) or run `python -m tools.stack prepare`"


async def _wait_for_schemas(url: str, owners: list[str], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while missing := await schemas_missing(url, owners):
        if asyncio.get_running_loop().time() > deadline:
            # A DependencyError: one line on stderr and exit 1, no traceback (run_service).
            raise SchemaNotDeployed(
                f"the schema of {', '.join(missing)} is not deployed after {within:g} s: {deployers(missing)}"
            )
        get_logger(__name__).warning(
            "waiting for a schema this service reads", owners=missing, deployed_by=deployers(missing)
        )
        await asyncio.sleep(0.5)


async def pool_ready(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=2) as conn:
        return bool(await conn.fetchval("SELECT true", timeout=2))


async def cancel_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def serving(
    app: web.Application, tasks: Iterable[asyncio.Task[Any]], broker: Broker, pool: asyncpg.Pool | None = None
) -> AsyncIterator[None]:
    """The service at work: ready while its broker (and pool, if it has one) answer; its background tasks
    are cancelled on exit, before the broker and pool they use are closed."""
    app[READINESS_CHECKS].append(broker.is_ready)
    if pool is not None:
        app[READINESS_CHECKS].append(lambda: pool_ready(pool))
    tasks = list(tasks)
    stopping = False

    def ended(task: asyncio.Task[Any]) -> None:
        # Every background task (and consumer loop) runs as long as the service: one that ends before the stop
        # leaves its work undone (a consumer its prefetched messages unacknowledged) while the process still
        # looks alive, so the service stops, with an exit status that says so, and its supervisor restarts it.
        if stopping:
            return
        reason = "cancelled" if task.cancelled() else repr(task.exception() or "returned")
        get_logger(__name__).error("a background task ended; the service stops", task=task.get_name(), reason=reason)
        failed = app.get(SERVICE_FAILED)
        if failed is not None and not failed.done():
            failed.set_exception(BackgroundTaskEnded(f"background task {task.get_name()} ended: {reason}"))

    for task in (*tasks, *broker.consumer_tasks):
        task.add_done_callback(ended)
    # What start-up made (modules, models, schemas, connections) lives as long as the process: frozen out of
    # the collector, a full collection no longer walks it all again (60 ms each, four in 6000 ledger events).
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        stopping = True
        await cancel_tasks(tasks)


async def run_periodically(name: str, interval: float, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work` every `interval` seconds until cancelled; a failed round is logged and retried next time."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            get_logger(__name__).warning("periodic task interrupted by a closing channel", task=name)
        except Exception as exc:
            get_logger(__name__).warning("periodic task failed", task=name, error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
