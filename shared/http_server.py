"""Serving an application on a port claimed first, with the limits a public HTTP edge needs.

aiohttp answers requests its HTTP parser refuses (a bad request line, a header too long, an encoding it
cannot decode) itself, in text/plain, before any middleware runs; it offers no hook for that answer
(aio-libs/aiohttp#3287). `EdgeRequestHandler` is aiohttp's own connection handler with that one answer
replaced by the service's error format, plus a cap on open connections. Slow clients are bounded by
aiohttp's keep-alive timer, which also runs from the start of a connection: a client that has not finished
sending its headers when it fires is disconnected (the header read timeout).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

from shared.logs import get_logger
from shared.web import SERVER_HEADER, ErrorPage, Problem, problem_page

log = get_logger("paystream.access")

_TOO_BUSY_BODY = (
    b'{"type": "https://paystream.dev/problems/too-many-connections", "title": "Service Unavailable", '
    b'"status": 503, "detail": "The service has too many open connections; retry shortly."}'
)
_TOO_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 1\r\n"
    b"Server: " + SERVER_HEADER.encode() + b"\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_TOO_BUSY_BODY)).encode() + b"\r\n\r\n" + _TOO_BUSY_BODY
)


def parser_problem(status: int, exc: BaseException | None) -> Problem:
    """What a request aiohttp's parser refused gets: a sentence, never the parser's message (it echoes
    the offending bytes and, for brotli or zstd, advice to install a package)."""
    if isinstance(exc, http_exceptions.ContentEncodingError):
        return Problem(
            415,
            "unsupported-content-encoding",
            "The body's Content-Encoding is not supported: send it uncompressed, or compressed with gzip or deflate.",
        )
    if isinstance(exc, http_exceptions.LineTooLong):
        return Problem(431, "headers-too-large", "The request line or a header is too long.")
    if isinstance(exc, http_exceptions.InvalidURLError):
        return Problem(400, "malformed-request", "The request target is not a valid URL path.")
    if isinstance(exc, http_exceptions.InvalidHeader):
        return Problem(400, "malformed-request", "A request header is malformed.")
    if status >= 500:
        return Problem(status, "internal-error", "The server could not complete the request.")
    return Problem(status, "malformed-request", "The request is not valid HTTP/1.1.")


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering parser errors in the service's format and capping connections."""

    def __init__(
        self, manager: web.Server, *, error_page: ErrorPage = problem_page, max_connections: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._error_page = error_page
        self._max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        if manager is not None and self._max_connections and len(manager.connections) >= self._max_connections:
            # Refused before any parsing or task: the answer, our side shut, then the socket closed a moment
            # later (closing at once with the client's request unread would reset the connection and lose it).
            self._manager = None
            self._force_close = True  # data_received ignores whatever the client sends meanwhile
            stream = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
            stream.write(_TOO_BUSY)
            if stream.can_write_eof():
                stream.write_eof()
            asyncio.get_running_loop().call_later(1.0, stream.close)
            log.warning("connection refused", reason="too many connections", limit=self._max_connections)
            return
        super().connection_made(transport)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # A body that is not what its Content-Encoding says was already answered (400) by `read_body`;
        # aiohttp meets the same error again draining the rest and would log a traceback for it.
        exc_info = kwargs.get("exc_info")
        if isinstance(exc_info, RequestPayloadError):
            log.info("connection closed", reason="body could not be decoded")
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response was partly sent; the connection is closed instead")
        problem = parser_problem(status, exc)
        log.info(
            "request refused",
            status=problem.status,
            problem=problem.slug,
            reason=type(exc).__name__ if exc is not None else None,
        )
        response = self._error_page(request, problem)
        response.headers["Server"] = SERVER_HEADER
        response.force_close()
        return response


class EdgeServer(web.Server):
    """aiohttp's low-level server, making `EdgeRequestHandler`s."""

    def __call__(self) -> web.RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An AppRunner whose server is an `EdgeServer` (same request handling, same shutdown)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return EdgeServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )


def claim_port(host: str, port: int) -> socket.socket:
    """Bind the port now, so a port in use stops the service before it connects to anything.

    Raises OSError (EADDRINUSE, EACCES...) with the socket closed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now (connections wait in the backlog until the service is ready) makes the claim
        # exclusive: SO_REUSEADDR lets a second bind succeed only while nobody listens.
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
