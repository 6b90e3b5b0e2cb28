"""The intake while PostgreSQL is cut off from it (by a proxy), as a real process: 503 with Retry-After, then
recovery by itself once the database is back (docs/reference/intake-api.md)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.client import payment_body
from tests.support.infra import Servers
from tests.support.intake_deployment import Deployment, deployment, proxy_to, through
from tests.support.link_proxy import LinkProxy
from tests.support.problem_json import problem_of
from tests.support.processes import eventually


@pytest.fixture(scope="module")
async def database_link(servers: Servers) -> AsyncIterator[LinkProxy]:
    async with proxy_to(servers.database_url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
async def behind_database_link(
    servers: Servers, database_link: LinkProxy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The intake alone, reaching PostgreSQL only through `database_link`; the ledger's schema, which the intake
    reads, deployed beforehand as the ledger would have."""
    services = {"intake_api": ("intake_api", lambda env: {"DATABASE_URL": through(env["DATABASE_URL"], database_link)})}
    path = tmp_path_factory.mktemp("database_cut")
    async with deployment(servers, path, services, deployed=("ledger",)) as running:
        yield running


@pytest.fixture
async def database_cut(database_link: LinkProxy, behind_database_link: Deployment) -> AsyncIterator[LinkProxy]:
    """PostgreSQL cut off from the intake; restored after the test whatever happens."""
    database_link.cut()
    try:
        yield database_link
    finally:
        database_link.restore()


async def test_post_answers_503_with_retry_after_while_the_database_is_unreachable(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_database_link.client(http_session)
    headers = intake.headers(**{"Idempotency-Key": secrets.token_hex(8), "Prefer": "wait=0"})

    async with http_session.post(f"{intake.base_url}/v1/payments", json=payment_body(), headers=headers) as r:
        await problem_of(r, 503, "database-unavailable")
        assert r.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("suffix", ["", "/events", "/cancel"])
async def test_reads_and_cancels_answer_503_while_the_database_is_unreachable(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession, suffix: str
) -> None:
    intake = behind_database_link.client(http_session)
    method = "POST" if suffix == "/cancel" else "GET"
    url = f"{intake.base_url}/v1/payments/pay_{secrets.token_hex(16)}{suffix}"

    async with http_session.request(method, url, headers=intake.headers()) as response:
        await problem_of(response, 503, "database-unavailable")
        assert response.headers["Retry-After"].isdigit()


async def test_the_intake_recovers_by_itself_when_the_database_returns(
    behind_database_link: Deployment, database_cut: LinkProxy, http_session: aiohttp.ClientSession
) -> None:
    intake = behind_database_link.client(http_session)
    key, body = secrets.token_hex(8), payment_body()
    status, _, _ = await intake.create(body, key=key, wait=0)
    assert status == 503

    database_cut.restore()

    async def accepted() -> bool:
        status, _, _ = await intake.create(body, key=key, wait=0)
        assert status in (201, 503), status
        return status == 201  # the first success creates: the 503 had stored nothing

    await eventually(accepted, timeout=20, interval=0.2, what="the retried POST to be accepted")
