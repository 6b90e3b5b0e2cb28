"""The notifier's store against the real database: what a delivery reads, and what each attempt records.

The handlers' tests run over a fake store; these check the SQL behind it: the payment read with the delivery
target is the ledger's row as it stands now, and an attempt's row, its delivery's state and its endpoint's
failure state are written as the rules decided.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.notifier.handlers import Attempt, DeliveryTarget
from services.notifier.rules import AttemptResult, MerchantEvent, NextStep
from services.notifier.store import PostgresNotifierStore
from shared.db import migrate
from tests.support.notifier_rows import DEV_BOX, insert_endpoint, insert_payments, set_status

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MERCHANT = "shop"


@pytest.fixture(scope="module")
async def notifier_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await migrate(conn, ["notifier"])


@pytest.fixture
async def store(pool: asyncpg.Pool, notifier_schema: None) -> AsyncIterator[PostgresNotifierStore]:
    yield PostgresNotifierStore(pool, DEV_BOX)


async def an_endpoint(pool: asyncpg.Pool, events: tuple[str, ...] = ("*",)) -> tuple[str, str]:
    endpoint_id = f"we_{secrets.token_hex(8)}"
    secret = await insert_endpoint(pool, endpoint_id, MERCHANT, "http://shop.example/hooks", events)
    return endpoint_id, secret


async def a_payment_event(store: PostgresNotifierStore, pool: asyncpg.Pool) -> tuple[MerchantEvent, list[str]]:
    """A new payment, and its payment.created event recorded: the event and its pending deliveries."""
    payment_id = f"pay_{secrets.token_hex(8)}"
    await insert_payments(pool, [payment_id], MERCHANT)
    found = (await store.current_payments([payment_id]))[payment_id]
    event = MerchantEvent(
        id=f"evt_{secrets.token_hex(8)}",
        type="payment.created",
        merchant_id=found[0],
        payment_id=payment_id,
        created=NOW,
        data={"object": found[1]},
    )
    return event, (await store.record_events([event]))[event.id]


async def a_pending_delivery(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> tuple[str, MerchantEvent, DeliveryTarget]:
    """A new endpoint and a payment event for it: the endpoint's id, the event and its pending delivery's target."""
    endpoint_id, _ = await an_endpoint(pool)
    event, _ = await a_payment_event(store, pool)
    target = await store.delivery_target(event.id, endpoint_id, NOW)
    assert target is not None
    return endpoint_id, event, target


def payment_events(
    merchant: str, payments: dict[str, tuple[str, dict[str, Any]]], types: list[str]
) -> list[MerchantEvent]:
    """An event of each type, in order, about each of the payments (as current_payments read them), in order."""
    return [
        MerchantEvent(
            id=f"evt_{secrets.token_hex(8)}",
            type=event_type,
            merchant_id=merchant,
            payment_id=payment_id,
            created=NOW,
            data={"object": payment},
        )
        for (payment_id, (_, payment)), event_type in zip(payments.items(), types, strict=True)
    ]


def failed(status: int | None = 500) -> AttemptResult:
    return AttemptResult(status_code=status, error=None if status else "connection: refused", duration_ms=7)


async def failing_since(pool: asyncpg.Pool, endpoint_id: str) -> datetime | None:
    found: datetime | None = await pool.fetchval(
        "SELECT failing_since FROM notifier.webhook_endpoints WHERE id = $1", endpoint_id
    )
    return found


async def test_the_target_carries_the_payment_as_it_stands_now(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    endpoint_id, secret = await an_endpoint(pool)
    event, pending = await a_payment_event(store, pool)
    assert endpoint_id in pending
    await set_status(pool, [event.payment_id or ""], "SUCCEEDED")

    target = await store.delivery_target(event.id, endpoint_id, NOW)

    assert target is not None and target.payment is not None
    assert event.data["object"]["status"] == "PENDING"
    _, now = (await store.current_payments([event.payment_id or ""]))[event.payment_id or ""]
    assert target.payment == now and target.payment["status"] == "SUCCEEDED"
    assert (target.secret, target.delivery_status, target.endpoint_enabled) == (secret, "pending", True)


async def test_events_are_stored_together_once_each_in_order_with_a_delivery_per_matching_endpoint(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    merchant = f"shop_{secrets.token_hex(4)}"
    every_id, paid_id = f"we_{secrets.token_hex(8)}", f"we_{secrets.token_hex(8)}"
    await insert_endpoint(pool, every_id, merchant, "http://a.example/hooks")
    await insert_endpoint(pool, paid_id, merchant, "http://b.example/hooks", ("payment.succeeded",))
    payment_ids = [f"pay_{secrets.token_hex(8)}" for _ in range(3)]
    await insert_payments(pool, payment_ids, merchant)
    payments = await store.current_payments([*payment_ids, "pay_unknown"])
    assert sorted(payments) == sorted(payment_ids) and {m for m, _ in payments.values()} == {merchant}
    events = payment_events(merchant, payments, ["payment.created", "payment.succeeded", "payment.failed"])

    pending = await store.record_events([*events, events[0]])  # one of them twice, as a redelivery brings it

    assert pending == {
        events[0].id: [every_id],
        events[1].id: sorted([every_id, paid_id]),
        events[2].id: [every_id],
    }
    listed = await pool.fetch("SELECT id, data FROM notifier.events WHERE merchant_id = $1 ORDER BY seq", merchant)
    assert [r["id"] for r in listed] == [e.id for e in events]
    assert [r["data"] for r in listed] == [e.data for e in events]
    # Replayed: the same events, nothing new, the deliveries still pending answered again.
    assert await store.record_events(events) == pending


async def test_opening_deliveries_answers_the_targets_a_read_of_them_would(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    merchant = f"shop_{secrets.token_hex(4)}"
    every_id, paid_id, gone_id = (f"we_{secrets.token_hex(8)}" for _ in range(3))
    secret = await insert_endpoint(pool, every_id, merchant, "http://a.example/hooks")
    await insert_endpoint(pool, paid_id, merchant, "http://b.example/hooks", ("payment.succeeded",))
    await insert_endpoint(pool, gone_id, merchant, "http://c.example/hooks")
    payment_ids = [f"pay_{secrets.token_hex(8)}" for _ in range(2)]
    await insert_payments(pool, payment_ids, merchant)
    payments = await store.current_payments(payment_ids)
    events = payment_events(merchant, payments, ["payment.created", "payment.succeeded"])

    targets = await store.open_deliveries([*events, events[0]])  # one of them twice, as a redelivery brings it

    keys = [(events[0].id, every_id), (events[1].id, every_id), (events[1].id, paid_id)]
    assert sorted(targets) == sorted([*keys, (events[0].id, gone_id), (events[1].id, gone_id)])
    for key, target in targets.items():
        assert target == await store.delivery_target(*key, NOW)
    assert targets[keys[0]].secret == secret and targets[keys[0]].payment == payments[payment_ids[0]][1]

    # Replayed after an endpoint was deleted and one delivery made: the pending ones of live endpoints, again.
    await pool.execute("UPDATE notifier.webhook_endpoints SET deleted_at = now() WHERE id = $1", gone_id)
    await pool.execute(
        "UPDATE notifier.deliveries SET status = 'delivered' WHERE event_id = $1 AND endpoint_id = $2", *keys[2]
    )
    again = await store.open_deliveries(events)
    assert sorted(again) == sorted(keys[:2])
    assert again == {key: targets[key] for key in keys[:2]}


async def test_an_event_without_a_payment_has_no_payment_in_its_target(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    endpoint_id, _ = await an_endpoint(pool)
    event = MerchantEvent(
        id=f"evt_{secrets.token_hex(8)}",
        type="webhook_endpoint.disabled",
        merchant_id=MERCHANT,
        payment_id=None,
        created=NOW,
        data={"object": {"id": "we_other"}},
    )
    assert endpoint_id in (await store.record_events([event]))[event.id]

    target = await store.delivery_target(event.id, endpoint_id, NOW)

    assert target is not None and target.payment is None and target.event.data == event.data


async def test_attempts_are_numbered_and_an_endpoint_fails_from_its_first_failure_until_a_success(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    endpoint_id, event, target = await a_pending_delivery(store, pool)
    first, later = NOW, NOW + timedelta(seconds=5)

    assert await store.record_attempt(target, failed(500), NextStep("retry", 5, first), first) == 1
    assert await store.record_attempt(target, failed(None), NextStep("retry", 60, later), later) == 2
    assert await failing_since(pool, endpoint_id) == first  # since the first failure, not the latest
    pending = await store.delivery_target(event.id, endpoint_id, NOW)
    assert pending is not None and pending.delivery_status == "pending" and pending.failing_since == first

    assert await store.record_attempt(target, AttemptResult(200, None, 3), NextStep("delivered"), later) == 3

    assert await failing_since(pool, endpoint_id) is None
    rows = await pool.fetch(
        "SELECT attempt, status_code, error, duration_ms, next_attempt_at FROM notifier.delivery_attempts"
        " WHERE event_id = $1 ORDER BY id",
        event.id,
    )
    assert [(r["attempt"], r["status_code"], r["next_attempt_at"]) for r in rows] == [
        (1, 500, first + timedelta(seconds=5)),
        (2, None, later + timedelta(seconds=60)),
        (3, 200, None),
    ]
    assert rows[1]["error"] == "connection: refused" and rows[0]["duration_ms"] == 7
    delivery = await pool.fetchrow(
        "SELECT status, attempts, delivered_at, next_attempt_at FROM notifier.deliveries"
        " WHERE event_id = $1 AND endpoint_id = $2",
        event.id,
        endpoint_id,
    )
    assert delivery is not None
    assert (delivery["status"], delivery["attempts"], delivery["next_attempt_at"]) == ("delivered", 3, None)
    assert delivery["delivered_at"] is not None


async def test_giving_up_fails_the_delivery_and_leaves_the_endpoint_failing(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    endpoint_id, event, target = await a_pending_delivery(store, pool)

    assert await store.record_attempt(target, failed(503), NextStep("give_up", failing_since=NOW), NOW) == 1

    after = await store.delivery_target(event.id, endpoint_id, NOW)
    assert after is not None and after.delivery_status == "failed" and after.endpoint_enabled
    assert await failing_since(pool, endpoint_id) == NOW


async def test_disabling_an_endpoint_fails_its_other_pending_deliveries(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    endpoint_id, event, target = await a_pending_delivery(store, pool)
    other, _ = await a_payment_event(store, pool)
    since = NOW - timedelta(days=6)

    assert await store.record_attempt(target, failed(500), NextStep("disable", failing_since=since), NOW) == 1

    endpoint = await pool.fetchrow("SELECT * FROM notifier.webhook_endpoints WHERE id = $1", endpoint_id)
    assert endpoint is not None
    assert (endpoint["status"], endpoint["failing_since"]) == ("disabled", since)
    assert endpoint["disabled_at"] is not None
    statuses = await pool.fetch(
        "SELECT event_id, status FROM notifier.deliveries WHERE endpoint_id = $1 ORDER BY event_id", endpoint_id
    )
    assert {r["event_id"]: r["status"] for r in statuses} == {event.id: "failed", other.id: "failed"}
    later = await store.delivery_target(other.id, endpoint_id, NOW)
    assert later is not None and not later.endpoint_enabled


async def test_many_targets_opened_and_attempts_recorded_in_one_statement_each_as_one_at_a_time_would(
    store: PostgresNotifierStore, pool: asyncpg.Pool
) -> None:
    answering, _ = await an_endpoint(pool)
    down, _ = await an_endpoint(pool)
    first, second = await a_payment_event(store, pool), await a_payment_event(store, pool)
    keys = [(event.id, endpoint) for event, _ in (first, second) for endpoint in (answering, down)]
    # The events' deliveries to the other tests' endpoints of the same merchant are pending too: left out here.
    opened = await store.open_deliveries([first[0], second[0]])
    assert set(keys) <= set(opened)
    targets = {key: opened[key] for key in keys}
    for key, target in targets.items():
        assert target == await store.delivery_target(*key, NOW)

    # The answering endpoint delivered both, the one that is down failed both, since the first of its attempts.
    later = NOW + timedelta(seconds=1)
    attempts = [
        Attempt(targets[key], AttemptResult(200, None, 3), NextStep("delivered"), NOW)
        if key[1] == answering
        else Attempt(targets[key], failed(503), NextStep("retry", 5, NOW if key[0] == first[0].id else later), NOW)
        for key in keys
    ]
    assert await store.record_attempts(attempts) == [1, 1, 1, 1]
    assert await failing_since(pool, down) == NOW and await failing_since(pool, answering) is None
    for (event_id, endpoint), a in zip(keys, attempts, strict=True):
        row = await pool.fetchrow(
            "SELECT d.status, d.attempts, d.next_attempt_at, a.status_code FROM notifier.deliveries d"
            " JOIN notifier.delivery_attempts a USING (event_id, endpoint_id)"
            " WHERE d.event_id = $1 AND d.endpoint_id = $2",
            event_id,
            endpoint,
        )
        assert row is not None and row["attempts"] == 1 and row["status_code"] == a.result.status_code
        assert (row["status"], row["next_attempt_at"]) == (
            ("delivered", None) if endpoint == answering else ("pending", NOW + timedelta(seconds=5))
        )
    # A second round is numbered on from there.
    assert await store.record_attempts(attempts[1:2]) == [2]
