"""The Idempotency-Key table of docs/reference/intake-api.md, row by row, against the running stack."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from multidict import CIMultiDictProxy

from services.intake_api import store
from shared.db import create_pool
from tests.support.client import IntakeClient, payment_body, simulate_card
from tests.support.problem_json import problem_of
from tests.support.processes import Stack, eventually


@pytest.fixture(scope="module")
async def stack_db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.env["DATABASE_URL"], max_size=3)
    yield pool
    await asyncio.wait_for(pool.close(), 10)


async def post_raw(
    http: aiohttp.ClientSession, intake: IntakeClient, raw: str, key: str
) -> tuple[int, dict[str, object], CIMultiDictProxy[str]]:
    headers = intake.headers(**{"Idempotency-Key": key, "Content-Type": "application/json", "Prefer": "wait=0"})
    async with http.post(f"{intake.base_url}/v1/payments", data=raw.encode(), headers=headers) as response:
        return response.status, await response.json(content_type=None), response.headers


async def in_ledger(pool: asyncpg.Pool, payment_id: str) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM ledger.payment_requests WHERE id = $1", payment_id))


async def test_a_new_key_answers_201_with_the_payment_and_its_location(intake: IntakeClient) -> None:
    body = payment_body()

    status, payment, headers = await intake.create(body, wait=0)

    assert status == 201
    assert headers["Location"] == f"/v1/payments/{payment['id']}"
    assert payment["id"].startswith("pay_") and payment["status"] == "PENDING"
    assert {k: payment[k] for k in body} == body
    assert "Idempotent-Replayed" not in headers


async def test_a_retry_with_the_same_key_and_body_replays_200_with_the_same_payment(intake: IntakeClient) -> None:
    key, body = secrets.token_hex(8), payment_body()
    _, first, _ = await intake.create(body, key=key, wait=0)

    status, replay, headers = await intake.create(body, key=key, wait=0)

    assert status == 200
    assert headers["Idempotent-Replayed"] == "true"
    assert replay["id"] == first["id"]
    assert headers["Location"] == f"/v1/payments/{first['id']}"


async def test_a_replay_shows_the_payments_current_state(intake: IntakeClient, http: aiohttp.ClientSession) -> None:
    key, body = secrets.token_hex(8), payment_body()
    _, first, _ = await intake.create(body, key=key, wait=10)
    await simulate_card(http, first["checkout_url"], "4242424242424242")
    await intake.terminal(first["id"])

    status, replay, _ = await intake.create(body, key=key)

    assert status == 200
    assert (replay["id"], replay["status"]) == (first["id"], "SUCCEEDED")


async def test_a_replay_ignores_key_order_and_whitespace(http: aiohttp.ClientSession, intake: IntakeClient) -> None:
    key, body = secrets.token_hex(8), payment_body(metadata={"cart": "c-9", "gift": "yes"})
    status, first, _ = await post_raw(http, intake, json.dumps(body), key)
    assert status == 201
    shuffled = dict(reversed(body.items()))
    shuffled["metadata"] = {"gift": "yes", "cart": "c-9"}

    status, replay, headers = await post_raw(http, intake, json.dumps(shuffled, indent=7), key)

    assert (status, replay["id"], headers["Idempotent-Replayed"]) == (200, first["id"], "true")


async def test_the_same_key_with_a_different_body_answers_422_idempotency_key_reuse(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient
) -> None:
    key = secrets.token_hex(8)
    await intake.create(payment_body(amount=1999), key=key, wait=0)

    headers = intake.headers(**{"Idempotency-Key": key})
    async with http.post(
        f"{stack.url('intake_api')}/v1/payments", json=payment_body(amount=2999), headers=headers
    ) as response:
        await problem_of(response, 422, "idempotency-key-reuse")


@pytest.mark.parametrize("key", [None, "", "k" * 256, "caf\u00e9"])
async def test_a_missing_or_invalid_idempotency_key_answers_400(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, key: str | None
) -> None:
    headers = intake.headers() if key is None else intake.headers(**{"Idempotency-Key": key})
    async with http.post(f"{stack.url('intake_api')}/v1/payments", json=payment_body(), headers=headers) as response:
        await problem_of(response, 400, "idempotency-key-missing" if key is None else "idempotency-key-invalid")


async def test_50_concurrent_posts_with_one_key_make_exactly_one_payment(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, stack_db: asyncpg.Pool
) -> None:
    key, body = secrets.token_hex(8), payment_body()

    answers = await asyncio.gather(*(intake.create(body, key=key) for _ in range(50)))

    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {200, 201, 409} and statuses.count(201) == 1, statuses
    ids = {payment["id"] for status, payment, _ in answers if status != 409}
    assert len(ids) == 1
    [payment_id] = ids
    assert (
        await stack_db.fetchval(
            "SELECT count(*) FROM intake.payments WHERE merchant_id = 'demo' AND idempotency_key = $1", key
        )
        == 1
    )
    assert (
        await stack_db.fetchval(
            "SELECT count(*) FROM intake.outbox WHERE event_type = 'payment.requested' AND payment_id = $1", payment_id
        )
        == 1
    )
    await eventually(lambda: in_ledger(stack_db, payment_id), what="the payment in the ledger")
    assert (
        await stack_db.fetchval(
            "SELECT count(*) FROM ledger.payment_requests WHERE merchant_id = 'demo' AND idempotency_key = $1", key
        )
        == 1
    )


async def purge_key_of(pool: asyncpg.Pool, payment_id: str) -> None:
    """Age the payment's idempotency record past retention (24 h) and run the intake's purge."""
    await eventually(lambda: in_ledger(pool, payment_id), what="the payment in the ledger")
    await pool.execute("UPDATE intake.payments SET created_at = now() - interval '25 hours' WHERE id = $1", payment_id)
    await store.purge_expired_keys(pool, 24)
    assert await pool.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment_id) == 0


async def test_a_key_purged_after_retention_still_replays_the_payment_from_the_ledger(
    intake: IntakeClient, stack_db: asyncpg.Pool
) -> None:
    key, body = secrets.token_hex(8), payment_body()
    _, first, _ = await intake.create(body, key=key, wait=0)
    await purge_key_of(stack_db, first["id"])

    status, replay, headers = await intake.create(body, key=key, wait=0)

    assert (status, replay["id"], headers["Idempotent-Replayed"]) == (200, first["id"], "true")


async def test_a_key_purged_after_retention_still_refuses_a_different_body(
    stack: Stack, http: aiohttp.ClientSession, intake: IntakeClient, stack_db: asyncpg.Pool
) -> None:
    key = secrets.token_hex(8)
    _, first, _ = await intake.create(payment_body(amount=1999), key=key, wait=0)
    await purge_key_of(stack_db, first["id"])

    headers = intake.headers(**{"Idempotency-Key": key})
    async with http.post(
        f"{stack.url('intake_api')}/v1/payments", json=payment_body(amount=2999), headers=headers
    ) as response:
        await problem_of(response, 422, "idempotency-key-reuse")
