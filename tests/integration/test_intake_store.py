"""The intake's records against the real PostgreSQL: atomic acceptance, idempotency, fallback reads, retention."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from services.intake_api import store
from services.intake_api.models import PaymentCreate
from services.ledger.postgres_store import PostgresLedgerStore
from shared.db import create_pool
from shared.events import Envelope, PaymentStatus
from tests.support.infra import Servers, create_database, drop_database
from tests.support.ledger import record_event

RETENTION_HOURS = 24


@pytest.fixture(scope="module")
async def intake_pool(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    """A database of this module's own, so retention purges and outbox rows touch no other test."""
    url = await create_database(servers.database_url)
    pool = await create_pool(url, max_size=25)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 10)
        await drop_database(url)


def request(**overrides: object) -> PaymentCreate:
    body: dict[str, object] = {
        "amount": 1999,
        "currency": "USD",
        "reference": "order-42",
        "return_url": "https://shop.example/orders/42",
    }
    body.update(overrides)
    return PaymentCreate.model_validate(body)


async def accept(
    pool: asyncpg.Pool, *, merchant: str = "demo", key: str | None = None, payment: PaymentCreate | None = None
) -> tuple[str, store.Existing | None]:
    payment = payment or request()
    payment_id = store.new_payment_id()
    created, existing = await store.accept_payment(
        pool,
        payment_id=payment_id,
        merchant_id=merchant,
        key=key or secrets.token_hex(8),
        request=payment,
        fingerprint=payment.fingerprint(),
        ttl_seconds=1800,
    )
    return (payment_id if created is not None else existing.payment_id), existing  # type: ignore[union-attr]


async def record_in_ledger(pool: asyncpg.Pool, payment_id: str) -> None:
    """What the ledger does with the payment's outbox row once the relay has published it."""
    envelope = await pool.fetchval(
        "SELECT envelope FROM intake.outbox WHERE payment_id = $1 AND event_type = 'payment.requested'", payment_id
    )
    await record_event(PostgresLedgerStore(pool), Envelope.model_validate_json(envelope))


async def backdate(pool: asyncpg.Pool, payment_id: str, age: timedelta) -> None:
    await pool.execute("UPDATE intake.payments SET created_at = now() - $2::interval WHERE id = $1", payment_id, age)


async def test_acceptance_stores_the_idempotency_record_and_the_outbox_row_together(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool, key="k-together")

    record = await intake_pool.fetchrow("SELECT * FROM intake.payments WHERE id = $1", payment_id)
    outbox = await intake_pool.fetch("SELECT * FROM intake.outbox WHERE payment_id = $1", payment_id)
    assert record["idempotency_key"] == "k-together" and record["merchant_id"] == "demo"
    assert [row["event_type"] for row in outbox] == ["payment.requested"]
    assert outbox[0]["published_at"] is None
    envelope = Envelope.model_validate_json(outbox[0]["envelope"])
    assert envelope.payment_id == payment_id and envelope.data["idempotency_key"] == "k-together"


async def test_a_key_already_taken_returns_the_first_payment_and_queues_nothing(intake_pool: asyncpg.Pool) -> None:
    first, _ = await accept(intake_pool, key="k-taken")

    second, existing = await accept(intake_pool, key="k-taken")

    assert existing is not None and second == first
    assert (
        await intake_pool.fetchval(
            "SELECT count(*) FROM intake.outbox o JOIN intake.payments p ON p.id = o.payment_id"
            " WHERE p.idempotency_key = 'k-taken'"
        )
        == 1
    )


async def test_concurrent_acceptances_with_one_key_store_exactly_one_payment(intake_pool: asyncpg.Pool) -> None:
    results = await asyncio.gather(*(accept(intake_pool, key="k-race") for _ in range(20)))

    assert len({payment_id for payment_id, _ in results}) == 1
    assert sum(existing is None for _, existing in results) == 1
    assert await intake_pool.fetchval("SELECT count(*) FROM intake.payments WHERE idempotency_key = 'k-race'") == 1


async def test_acceptances_written_together_each_get_their_own_outcome(intake_pool: asyncpg.Pool) -> None:
    # Accepted at once, these go to the database in one statement (store._Acceptances): new keys, one key
    # taken before, and one key twice with two bodies.
    taken, _ = await accept(intake_pool, key="k-batch-taken")
    first, second = request(reference="first"), request(reference="second")
    results = await asyncio.gather(
        *(accept(intake_pool, key=f"k-batch-{i}") for i in range(5)),
        accept(intake_pool, key="k-batch-taken"),
        accept(intake_pool, key="k-batch-twice", payment=first),
        accept(intake_pool, key="k-batch-twice", payment=second),
    )

    new = results[:5]
    assert all(existing is None for _, existing in new) and len({payment_id for payment_id, _ in new}) == 5
    assert results[5][0] == taken and results[5][1] is not None
    (twice_a, existing_a), (twice_b, existing_b) = results[6], results[7]
    assert twice_a == twice_b and (existing_a is None) != (existing_b is None)
    replay = existing_a or existing_b
    assert replay is not None and replay.fingerprint == first.fingerprint()  # the first written is the one kept
    for payment_id in {payment_id for payment_id, _ in results}:
        count = "SELECT count(*) FROM intake.outbox WHERE payment_id = $1"
        assert await intake_pool.fetchval(count, payment_id) == 1


async def test_the_same_key_under_two_merchants_makes_two_payments(intake_pool: asyncpg.Pool) -> None:
    demo, _ = await accept(intake_pool, merchant="demo", key="k-shared")
    other, existing = await accept(intake_pool, merchant="other", key="k-shared")

    assert existing is None and demo != other


async def test_a_payment_and_its_outbox_row_are_written_together(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)

    rows = await intake_pool.fetch("SELECT event_type FROM intake.outbox WHERE payment_id = $1", payment_id)
    assert [r["event_type"] for r in rows] == ["payment.requested"]


async def test_a_taken_key_writes_no_second_outbox_row(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool, key="k-once")
    again, existing = await accept(intake_pool, key="k-once")

    assert existing is not None and again == payment_id
    assert await intake_pool.fetchval("SELECT count(*) FROM intake.outbox WHERE payment_id = $1", payment_id) == 1


async def test_a_read_before_the_ledger_has_the_payment_answers_from_the_intake_record(
    intake_pool: asyncpg.Pool,
) -> None:
    payment_id, _ = await accept(intake_pool, payment=request(metadata={"cart": "c-9"}, description="2 books"))

    view = await store.get_payment(intake_pool, "demo", payment_id)

    assert view is not None
    assert view.payment.status is PaymentStatus.PENDING and view.payment.checkout_url is None
    assert (view.payment.amount, view.payment.metadata, view.payment.description) == (1999, {"cart": "c-9"}, "2 books")


async def test_the_intent_noted_by_the_intake_shows_in_the_fallback_read(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)

    await store.remember_intent(intake_pool, payment_id, "http://sandbox/pay/pi_1", None)

    view = await store.get_payment(intake_pool, "demo", payment_id)
    assert view is not None and view.payment.checkout_url == "http://sandbox/pay/pi_1"


async def test_a_failed_intent_noted_by_the_intake_reads_as_failed(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)

    await store.remember_intent(intake_pool, payment_id, None, "gateway_error")

    view = await store.get_payment(intake_pool, "demo", payment_id)
    assert view is not None
    assert (view.payment.status, view.payment.failure_code) == (PaymentStatus.FAILED, "gateway_error")


async def test_a_checkout_url_the_intake_handed_out_shows_before_the_ledger_records_the_intent(
    intake_pool: asyncpg.Pool,
) -> None:
    payment_id, _ = await accept(intake_pool)
    await record_in_ledger(intake_pool, payment_id)
    await store.remember_intent(intake_pool, payment_id, "http://sandbox/pay/pi_2", None)

    view = await store.get_payment(intake_pool, "demo", payment_id)

    assert view is not None and view.payment.checkout_url == "http://sandbox/pay/pi_2"


async def test_once_the_ledger_has_the_payment_reads_come_from_the_ledger(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)
    await record_in_ledger(intake_pool, payment_id)
    await intake_pool.execute("UPDATE ledger.payment_requests SET status = 'SUCCEEDED' WHERE id = $1", payment_id)

    view = await store.get_payment(intake_pool, "demo", payment_id)

    assert view is not None and view.payment.status is PaymentStatus.SUCCEEDED


async def test_another_merchants_payment_reads_as_absent(intake_pool: asyncpg.Pool) -> None:
    in_intake, _ = await accept(intake_pool, merchant="demo")
    in_ledger, _ = await accept(intake_pool, merchant="demo")
    await record_in_ledger(intake_pool, in_ledger)

    assert await store.get_payment(intake_pool, "other", in_intake) is None
    assert await store.get_payment(intake_pool, "other", in_ledger) is None


async def test_the_purge_forgets_keys_past_retention_that_the_ledger_holds(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool, key="k-old")
    await record_in_ledger(intake_pool, payment_id)
    await backdate(intake_pool, payment_id, timedelta(hours=RETENTION_HOURS, minutes=1))

    await store.purge_expired_keys(intake_pool, RETENTION_HOURS)

    assert await intake_pool.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment_id) == 0


async def test_the_purge_keeps_keys_younger_than_retention(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)
    await record_in_ledger(intake_pool, payment_id)
    await backdate(intake_pool, payment_id, timedelta(hours=RETENTION_HOURS - 1))

    await store.purge_expired_keys(intake_pool, RETENTION_HOURS)

    assert await intake_pool.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment_id) == 1


async def test_the_purge_keeps_old_keys_the_ledger_does_not_hold_yet(intake_pool: asyncpg.Pool) -> None:
    payment_id, _ = await accept(intake_pool)
    await backdate(intake_pool, payment_id, timedelta(days=3))

    await store.purge_expired_keys(intake_pool, RETENTION_HOURS)

    assert await intake_pool.fetchval("SELECT count(*) FROM intake.payments WHERE id = $1", payment_id) == 1


async def test_a_purged_key_is_still_taken_through_the_ledger_with_its_fingerprint(intake_pool: asyncpg.Pool) -> None:
    payment = request(reference="order-purged")
    payment_id, _ = await accept(intake_pool, key="k-purged", payment=payment)
    await record_in_ledger(intake_pool, payment_id)
    await backdate(intake_pool, payment_id, timedelta(hours=RETENTION_HOURS + 1))
    await store.purge_expired_keys(intake_pool, RETENTION_HOURS)

    again, found = await accept(intake_pool, key="k-purged", payment=payment)

    assert again == payment_id
    assert found == store.Existing(payment_id, payment.fingerprint())
    assert await intake_pool.fetchval("SELECT count(*) FROM intake.payments WHERE idempotency_key = 'k-purged'") == 0


async def test_the_purge_drops_published_outbox_rows_past_retention_only(intake_pool: asyncpg.Pool) -> None:
    old_sent, _ = await accept(intake_pool)
    old_unsent, _ = await accept(intake_pool)
    recent_sent, _ = await accept(intake_pool)
    await intake_pool.execute(
        "UPDATE intake.outbox SET published_at = now() - interval '25 hours' WHERE payment_id = $1", old_sent
    )
    await intake_pool.execute("UPDATE intake.outbox SET published_at = now() WHERE payment_id = $1", recent_sent)

    await store.purge_expired_keys(intake_pool, RETENTION_HOURS)

    left = await intake_pool.fetch(
        "SELECT payment_id FROM intake.outbox WHERE payment_id = ANY($1::text[])", [old_sent, old_unsent, recent_sent]
    )
    assert {row["payment_id"] for row in left} == {old_unsent, recent_sent}
