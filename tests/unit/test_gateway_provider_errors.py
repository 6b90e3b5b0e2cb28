"""How a provider call's failures are sorted: transient ones are retried, permanent ones fail the payment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.providers.errors import PermanentGatewayError, TransientGatewayError
from shared.providers.http import request_json
from tests.support.processes import free_port

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(answer: Answer) -> str:
        app = web.Application()
        app.router.add_route("*", "/v1/intents", answer)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1/intents"))

    yield start
    for server in servers:
        await server.close()


async def call(url: str, time_limit: float = 5.0) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=time_limit)) as session:
        return await request_json(session, "POST", url, json={})


def status(code: int, body: str = '{"error": "x"}') -> Answer:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=code, text=body, content_type="application/json")

    return answer


async def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(TransientGatewayError, match="ClientConnectorError"):
        await call(f"http://127.0.0.1:{free_port()}/v1/intents")


async def test_no_answer_within_the_timeout_is_transient(serve) -> None:
    async def stall(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    url = await serve(stall)
    with pytest.raises(TransientGatewayError, match="Timeout"):
        await call(url, time_limit=0.2)


@pytest.mark.parametrize("code", [500, 502, 503, 504, 429])
async def test_a_server_error_or_rate_limit_is_transient(serve, code: int) -> None:
    with pytest.raises(TransientGatewayError, match=str(code)):
        await call(await serve(status(code)))


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
async def test_a_client_error_is_permanent(serve, code: int) -> None:
    with pytest.raises(PermanentGatewayError, match=str(code)):
        await call(await serve(status(code)))


async def test_a_2xx_whose_body_is_not_json_is_transient(serve) -> None:
    with pytest.raises(TransientGatewayError, match="not JSON"):
        await call(await serve(status(200, "<html>maintenance</html>")))


async def test_a_2xx_whose_json_is_not_an_object_is_permanent(serve) -> None:
    with pytest.raises(PermanentGatewayError, match="non-object"):
        await call(await serve(status(200, "[1, 2]")))


async def test_a_2xx_json_object_is_the_answer(serve) -> None:
    assert await call(await serve(status(201, '{"id": "pi_1"}'))) == {"id": "pi_1"}
