"""What every HTTP surface shares: problem+json errors, request metrics, health, readiness, /metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.logs import get_logger
from shared.metrics import HTTP_REQUEST_DURATION

log = get_logger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://paystream.dev/problems/"

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])


class Problem(Exception):
    """An error answered as RFC 9457 problem JSON."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> web.Response:
        body = {"type": PROBLEM_BASE + self.slug, "title": self.title, "status": self.status, "detail": self.detail}
        body.update(self.extra)
        return web.json_response(body, status=self.status, headers=self.headers, content_type=PROBLEM_CONTENT_TYPE)


_SLUG_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    503: "service-unavailable",
}


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as problem JSON; nothing unexpected leaves as a stack trace; every request is timed."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except Problem as problem:
        status = problem.status
        return problem.response()
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return Problem(
            exc.status,
            _SLUG_BY_STATUS.get(exc.status, "http-error"),
            exc.reason or HTTPStatus(exc.status).phrase,
            headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        ).response()
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return Problem(500, "internal-error", "The server could not complete the request.").response()
    finally:
        HTTP_REQUEST_DURATION.labels(request.method, _route_label(request), str(status)).observe(
            time.perf_counter() - started
        )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = request.app.get(READINESS_CHECKS, [])
    results = []
    for check in checks:
        try:
            results.append(await check())
        except Exception:
            results.append(False)
    if all(results):
        return web.json_response({"status": "ready"})
    return Problem(503, "not-ready", "A broker or database connection is down.").response()


async def metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def create_base_app(*, client_max_size: int = 1024**2) -> web.Application:
    """An application with the error middleware and the three operational routes."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=client_max_size)
    app[READINESS_CHECKS] = []
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
