"""Starting a service process: settings, logs, traces, then its aiohttp application until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import gc
import signal
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
from shared.config import SERVICES_BY_NAME, BrokerSettings, CommonSettings, DatabaseSettings, load_settings
from shared.db import MigrationChanged, Timeouts, create_pool, interfaces_missing, prepare_database, service_url
from shared.http_server import EdgeRunner, claim_port
from shared.logs import configure_logging, get_logger
from shared.metrics import service_registry
from shared.ownership import owner_of
from shared.supervisor import Supervisor
from shared.telemetry import configure_tracing, shutdown_tracing
from shared.web import BODY_TIMEOUT_SECONDS, ERROR_PAGE, METRICS_REGISTRY, READINESS_CHECKS, problem_page

T = TypeVar("T")
S = TypeVar("S", bound=CommonSettings)
# How long a stopping service lets requests in flight finish (deploy/kubernetes waits longer before SIGKILL).
DRAIN_SECONDS = 5.0


class BackgroundTaskEnded(RuntimeError):
    """A loop meant to run as long as the service ended for good (shared/supervisor.py): the service stops."""


# Done when the service is to stop: its result on SIGTERM/SIGINT, failed (BackgroundTaskEnded) when it must stop
# although nobody asked it to (see `serving`).
SERVICE_FAILED: web.AppKey[asyncio.Future[None]] = web.AppKey("service_failed")


class DependencyError(RuntimeError):
    """RabbitMQ or PostgreSQL cannot be used (unreachable, or refusing our credentials): the service stops."""


class SchemaNotDeployed(DependencyError):
    """A schema this service reads was not deployed by its owner in time: the service stops, naming the deployer."""


def run_service(
    name: str,
    settings_class: type[S],
    build_app: Callable[[S], web.Application],
    host: Callable[[S], str] = lambda settings: settings.http_host,
) -> None:
    """Run one service in the foreground; every service's `__main__` is this one call.

    It reads its own settings (`settings_class`, services/<name>/settings.py) and listens on `host(settings)`
    (HTTP_HOST unless the service says) and on the port its entry in `shared.config.SERVICES` names. The port is
    claimed before anything else, so a port in use stops the service with one line before it has connected to (or
    consumed from) anything; then the application starts (broker, database) and serves.
    """
    service = SERVICES_BY_NAME[name]
    settings = load_settings(settings_class)
    configure_logging(service.trace_name, fmt=settings.log_format, level=settings.log_level)
    configure_tracing(service.trace_name, settings.otel_exporter_otlp_endpoint)
    log = get_logger(name)
    listen_port = int(getattr(settings, service.port_setting))
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


async def _serve(app: web.Application, sock: socket.socket, settings: CommonSettings, log: Any) -> None:
    """Start the application (its cleanup contexts connect to the broker and database), then accept
    connections on the claimed socket until SIGTERM/SIGINT."""
    runner = EdgeRunner(
        app,
        # Not aiohttp's handlers: they raise GracefulExit out of the event loop, so the loops were cancelled
        # by asyncio.run's teardown, before the application's cleanup, each looking like a loop that died.
        handle_signals=False,
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
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop_signal, _stop_requested, failed, log)
    try:
        # Start-up may wait a while for its dependencies: a stop asked meanwhile ends that wait.
        starting = asyncio.ensure_future(runner.setup())
        await asyncio.wait([starting, failed], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            failed.result()  # raises if the service failed rather than was asked to stop
            return
        starting.result()
        # What start-up made (modules, models, schemas, connections, the sandbox's kept records) lives as long as
        # the process: frozen out of the collector, a full collection no longer walks it all again (60 ms each,
        # four in 6000 ledger events). Here rather than in `serving`, so that every service freezes, the sandbox,
        # the storefront and the console included.
        gc.collect()
        gc.freeze()
        await web.SockSite(runner, sock).start()
        log.info("service ready", port=sock.getsockname()[1])
        await failed  # until SIGTERM/SIGINT, or until a loop ended for good
    finally:
        await runner.cleanup()


def _stop_requested(failed: asyncio.Future[None], log: Any) -> None:
    if not failed.done():
        log.info("stop requested; draining")
        failed.set_result(None)


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


def cannot_recover(exc: BaseException) -> bool:
    """A failure no restart of a loop mends: refused credentials, a schema that is not what the code expects."""
    return isinstance(exc, MigrationChanged) or authentication_refused(exc)


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
    settings: DatabaseSettings,
    service: str,
    *,
    waits_for: Iterable[str] = (),
    **pool_args: Any,
) -> AsyncIterator[asyncpg.Pool]:
    """The database ready for `service`: created if missing, its migrations applied, pooled; closed on exit.

    Each schema has one deployer, the service that owns it (docs/explanation/ownership.md). The pool connects as
    the service's own role, which may write only its own schema and read only the interfaces granted to it. A
    service that cannot work without another's views (`waits_for`, such as ledger.payments_v1) waits, up to
    SCHEMA_WAIT_SECONDS, until their owner has deployed and granted them, then stops with one line naming the
    service (or command) that deploys them.
    """
    url = settings.database_url.get_secret_value()
    await retry_until_up("PostgreSQL", url, lambda: prepare_database(url, [service]))
    own = service_url(url, service)
    await _wait_for_interfaces(own, list(waits_for), settings.schema_wait_seconds)
    # Its own role missing or refused (no one prepared this database's roles): one line naming the role.
    pool = await retry_until_up(
        "PostgreSQL", own, lambda: create_pool(own, timeouts=database_timeouts(settings), **pool_args)
    )
    try:
        yield pool
    finally:
        await pool.close()


def service_database_url(settings: DatabaseSettings, service: str) -> str:
    """The URL `service` connects with: DATABASE_URL, as the service's own role."""
    return service_url(settings.database_url.get_secret_value(), service)


def database_timeouts(settings: DatabaseSettings) -> Timeouts:
    """How soon this service's PostgreSQL connections notice a silent server (DATABASE_*_TIMEOUT_SECONDS)."""
    return Timeouts(
        statement=settings.database_statement_timeout_seconds,
        connect=settings.database_connect_timeout_seconds,
        tcp=settings.database_tcp_timeout_seconds,
    )


@asynccontextmanager
async def broker(
    settings: BrokerSettings, name: str, groups: Iterable[ConsumerGroup], *, coalesce: bool = False
) -> AsyncIterator[Broker]:
    """A connected broker with these consumer groups declared (services pass them all); closed on exit.
    `coalesce`: concurrent publishes of one type share broker messages (Broker, PublishCoalescer)."""
    url = settings.amqp_url.get_secret_value()
    instance = Broker(
        url,
        settings.broker_namespace,
        name=name,
        heartbeat_seconds=settings.amqp_heartbeat_seconds,
        supervisor=Supervisor(unrecoverable=cannot_recover),
        coalesce=coalesce,
    )
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


async def _wait_for_interfaces(url: str, interfaces: list[str], within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while missing := await interfaces_missing(url, interfaces):
        owners = sorted({owner_of(interface) for interface in missing})
        if asyncio.get_running_loop().time() > deadline:
            # A DependencyError: one line on stderr and exit 1, no traceback (run_service).
            raise SchemaNotDeployed(
                f"the schema of {', '.join(owners)} is not deployed after {within:g} s: {deployers(owners)}"
            )
        get_logger(__name__).warning(
            "waiting for a schema this service reads", owners=owners, interfaces=missing, deployed_by=deployers(owners)
        )
        await asyncio.sleep(0.5)


async def pool_ready(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=2) as conn:
        return bool(await conn.fetchval("SELECT true", timeout=2))


async def database_answers(pool: asyncpg.Pool) -> bool:
    """Whether PostgreSQL answers a round trip through `pool` within 2 s (a consumer's `ready`)."""
    try:
        return await pool_ready(pool)
    except (Exception, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and being_cancelled():
            raise
        return False


@asynccontextmanager
async def serving(app: web.Application, broker: Broker, pool: asyncpg.Pool | None = None) -> AsyncIterator[None]:
    """The service at work: ready while its broker (and pool, if it has one) answer, its loops run by the
    broker's supervisor (see `supervising`)."""
    app[READINESS_CHECKS].append(broker.is_ready)
    if pool is not None:
        app[READINESS_CHECKS].append(lambda: pool_ready(pool))
    async with supervising(app, broker.supervisor):
        yield


@asynccontextmanager
async def supervising(app: web.Application, supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """The service's loops under `supervisor` (shared/supervisor.py): a loop that ends for good stops the
    service; on exit every loop is stopped, before what they use (broker, pool) is closed."""

    def loop_ended(ended: asyncio.Future[None]) -> None:
        # No restart mends it: the process stops, with an exit status that says so, and its own supervisor
        # (make run, systemd, Kubernetes) starts it again.
        failed = app.get(SERVICE_FAILED)
        error = None if ended.cancelled() else ended.exception()
        if failed is not None and not failed.done() and error is not None:
            failed.set_exception(BackgroundTaskEnded(str(error)))

    supervisor.failed.add_done_callback(loop_ended)
    try:
        yield supervisor
    finally:
        supervisor.failed.remove_done_callback(loop_ended)
        await supervisor.stop()
