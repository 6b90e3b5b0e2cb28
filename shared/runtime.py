"""Starting a service process: settings, logs, traces, then its aiohttp application until SIGTERM/SIGINT."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from shared.config import Settings, load_settings
from shared.logs import configure_logging, get_logger
from shared.telemetry import configure_tracing, shutdown_tracing

# Service names as they appear in traces (CONTRACT §8).
TRACE_NAMES = {
    "intake_api": "intake-api",
    "gateway_worker": "gateway-worker",
    "webhook_receiver": "webhook-receiver",
    "ledger": "ledger",
    "sandbox_gateway": "sandbox-gateway",
    "storefront": "storefront",
}


def run_service(
    name: str, build_app: Callable[[Settings], web.Application], port: Callable[[Settings], int]
) -> None:
    """Run one service in the foreground; every service's `__main__` is this one call."""
    settings = load_settings()
    configure_logging(TRACE_NAMES[name], fmt=settings.log_format, level=settings.log_level)
    configure_tracing(TRACE_NAMES[name], settings.otel_exporter_otlp_endpoint)
    log = get_logger(name)
    app = build_app(settings)
    listen_port = port(settings)
    log.info("service starting", port=listen_port)
    try:
        web.run_app(
            app,
            host=settings.http_host,
            port=listen_port,
            shutdown_timeout=5,
            print=None,
            access_log=None,
            handle_signals=True,
        )
    finally:
        shutdown_tracing()
        log.info("service stopped")
