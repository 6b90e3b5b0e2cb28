"""The ledger's recording rules against the real database, through record_events and the ledger's batch handler."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.ledger.handlers import LedgerHandlers
from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.store import BeforeCommit, PaymentWrite, StoredPayment, WriteResult
from shared.broker import Delivery, RetryLater
from shared.events import Envelope, PaymentStatus
from tests.support.ledger import consume, record_event
from tests.support.payment_histories import intent_created, requested, status_changed

S, F, E = PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.EXPIRED
DELIVERY = Delivery(attempt=1, max_attempts=8, redelivered=False)


def new_payment_id() -> str:
    return f"pay_{secrets.token_hex(8)}"


async def known_payment(pool: asyncpg.Pool, **request: object) -> str:
    """A payment the ledger has recorded, with its intent."""
    payment_id = new_payment_id()
    await record_event(PostgresLedgerStore(pool), requested(payment_id, **request))  # type: ignore[arg-type]
    await record_event(PostgresLedgerStore(pool), intent_created(payment_id))
    return payment_id


async def log_rows(pool: asyncpg.Pool, payment_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_id, event_type, from_status, to_status, source, outcome, late_success"
        " FROM ledger.payment_logs WHERE payment_request_id = $1 ORDER BY id",
        payment_id,
    )


async def payment(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM ledger.payment_requests WHERE id = $1", payment_id)
    assert row is not None
    return row


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_an_event_for_an_unknown_payment_is_retried_later_and_leaves_no_trace(pool: asyncpg.Pool) -> None:
    payment_id = new_payment_id()

    with pytest.raises(RetryLater):
        await record_event(PostgresLedgerStore(pool), status_changed(payment_id, S))

    assert (
        await pool.fetchval("SELECT count(*) FROM ledger.payment_logs WHERE payment_request_id = $1", payment_id) == 0
    )


async def test_every_event_gets_one_log_row_with_from_to_source_and_outcome(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    success = status_changed(payment_id, S, "webhook", "ok")

    await record_event(PostgresLedgerStore(pool), success)

    rows = await log_rows(pool, payment_id)
    assert [(r["event_type"], r["from_status"], r["to_status"], r["source"], r["outcome"]) for r in rows] == [
        ("payment.requested", None, "PENDING", "intake", "applied"),
        ("payment.intent_created", "PENDING", "PENDING", "gateway", "applied"),
        ("payment.status_changed", "PENDING", "SUCCEEDED", "webhook", "applied"),
    ]
    assert rows[-1]["event_id"] == success.id
    assert (await payment(pool, payment_id))["status"] == "SUCCEEDED"


async def test_the_same_event_delivered_again_is_recorded_once(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    success = status_changed(payment_id, S, "webhook", "ok")

    first = await record_event(PostgresLedgerStore(pool), success)
    again = await record_event(PostgresLedgerStore(pool), success)

    assert (first.outcome, again.outcome) == ("applied", "duplicate event")
    assert [r["event_id"] for r in await log_rows(pool, payment_id)].count(success.id) == 1


async def test_ten_concurrent_deliveries_of_one_event_apply_it_once(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    success = status_changed(payment_id, S, "webhook", "ok")

    results = await asyncio.gather(*(record_event(PostgresLedgerStore(pool), success) for _ in range(10)))

    assert sorted(r.outcome for r in results) == ["applied"] + ["duplicate event"] * 9
    assert [r["event_id"] for r in await log_rows(pool, payment_id)].count(success.id) == 1


async def test_concurrent_twin_payment_requests_create_one_payment(pool: asyncpg.Pool) -> None:
    payment_id = new_payment_id()
    request = requested(payment_id)

    results = await asyncio.gather(*(record_event(PostgresLedgerStore(pool), request) for _ in range(5)))

    assert sorted(r.outcome for r in results) == ["applied"] + ["duplicate event"] * 4
    assert await pool.fetchval("SELECT count(*) FROM ledger.payment_requests WHERE id = $1", payment_id) == 1
    assert len(await log_rows(pool, payment_id)) == 1


async def test_the_same_outcome_from_webhook_and_reconciliation_changes_the_payment_once(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)

    by_webhook = await record_event(PostgresLedgerStore(pool), status_changed(payment_id, S, "webhook", "ok"))
    changed_at = (await payment(pool, payment_id))["updated_at"]
    by_reconciliation = await record_event(
        PostgresLedgerStore(pool), status_changed(payment_id, S, "reconciliation", "reconciled")
    )

    assert by_webhook.outcome == "applied"
    assert by_reconciliation.outcome == "ignored: duplicate: already SUCCEEDED"
    assert (await payment(pool, payment_id))["updated_at"] == changed_at
    rows = await log_rows(pool, payment_id)
    assert [(r["source"], r["from_status"], r["to_status"]) for r in rows[-2:]] == [
        ("webhook", "PENDING", "SUCCEEDED"),
        ("reconciliation", "SUCCEEDED", "SUCCEEDED"),
    ]


async def test_a_failure_after_a_success_is_logged_as_ignored_and_not_applied(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    await record_event(PostgresLedgerStore(pool), status_changed(payment_id, S, "webhook", "ok"))

    stale = await record_event(PostgresLedgerStore(pool), status_changed(payment_id, F, "webhook", "declined"))

    assert stale.outcome == "ignored: stale: already SUCCEEDED"
    assert (await payment(pool, payment_id))["status"] == "SUCCEEDED"
    last = (await log_rows(pool, payment_id))[-1]
    assert (last["from_status"], last["to_status"], last["outcome"]) == (
        "SUCCEEDED",
        "SUCCEEDED",
        "ignored: stale: already SUCCEEDED",
    )


async def test_a_late_success_is_applied_flagged_in_the_log_and_counted(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    ledger = LedgerHandlers(PostgresLedgerStore(pool))
    await consume(ledger, status_changed(payment_id, E, "expiry", "expired"))
    late_before = counter("paystream_late_successes_total")

    await consume(ledger, status_changed(payment_id, S, "webhook", "paid"))

    row = await payment(pool, payment_id)
    assert (row["status"], row["failure_code"]) == ("SUCCEEDED", None)
    last = (await log_rows(pool, payment_id))[-1]
    assert (last["from_status"], last["to_status"], last["outcome"], last["late_success"]) == (
        "EXPIRED",
        "SUCCEEDED",
        "applied",
        True,
    )
    assert counter("paystream_late_successes_total") == late_before + 1


async def test_a_first_success_is_not_flagged_late(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)

    await record_event(PostgresLedgerStore(pool), status_changed(payment_id, S, "webhook", "paid"))

    assert (await log_rows(pool, payment_id))[-1]["late_success"] is False


@pytest.mark.parametrize("mismatch", [{"amount": 1}, {"currency": "EUR"}], ids=["amount", "currency"])
async def test_an_outcome_for_another_amount_is_logged_not_applied_and_counted(
    pool: asyncpg.Pool, mismatch: dict[str, Any]
) -> None:
    payment_id = await known_payment(pool)
    mismatches_before = counter("paystream_amount_mismatches_total")

    await consume(
        LedgerHandlers(PostgresLedgerStore(pool)), status_changed(payment_id, S, "webhook", "forged", **mismatch)
    )

    assert (await payment(pool, payment_id))["status"] == "PENDING"
    last = (await log_rows(pool, payment_id))[-1]
    assert (last["from_status"], last["to_status"]) == ("PENDING", "PENDING")
    assert last["outcome"].startswith("ignored: amount mismatch")
    assert counter("paystream_amount_mismatches_total") == mismatches_before + 1


async def test_an_expiry_sets_failure_code_expired(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)

    await record_event(PostgresLedgerStore(pool), status_changed(payment_id, E, "expiry", "expired"))

    row = await payment(pool, payment_id)
    assert (row["status"], row["failure_code"]) == ("EXPIRED", "expired")
    assert row["completed_at"] is not None


class HeldStore:
    """The Postgres store of a ledger that is slow to write: its first write waits until `release` is set,
    so that another ledger can change the payment between this one's read and its write."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._store = PostgresLedgerStore(pool)
        self.reads = 0
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def record_requests(self, requests: Sequence[Envelope]) -> dict[uuid.UUID, str]:
        return await self._store.record_requests(requests)

    async def read(self, payment_ids: Collection[str], event_ids: Collection[uuid.UUID]) -> dict[str, StoredPayment]:
        self.reads += 1
        return await self._store.read(payment_ids, event_ids)

    async def apply_if_unchanged(
        self, writes: Sequence[PaymentWrite], *, before_commit: BeforeCommit | None = None
    ) -> WriteResult:
        if not self.release.is_set():
            self.holding.set()
            await self.release.wait()
        return await self._store.apply_if_unchanged(writes, before_commit=before_commit)

    async def status_change(self, event_id: uuid.UUID) -> tuple[PaymentStatus | None, PaymentStatus] | None:
        return await self._store.status_change(event_id)


async def test_an_event_decided_on_a_state_that_changed_before_its_write_is_decided_again(pool: asyncpg.Pool) -> None:
    payment_id = await known_payment(pool)
    slow = HeldStore(pool)
    success = status_changed(payment_id, S, "webhook", "paid")
    expiry = status_changed(payment_id, E, "expiry", "expired")

    pending = asyncio.create_task(record_event(slow, success))
    await slow.holding.wait()  # the success is decided on PENDING, not written yet
    by_the_other_ledger = await record_event(PostgresLedgerStore(pool), expiry)
    slow.release.set()
    recorded = await pending

    assert by_the_other_ledger.outcome == "applied"
    assert slow.reads == 2  # its compare-and-set failed, so it read the new state and decided again
    assert recorded.outcome == "applied" and recorded.decision is not None and recorded.decision.late_success
    rows = await log_rows(pool, payment_id)
    assert [(r["event_id"], r["from_status"], r["to_status"], r["late_success"]) for r in rows[-2:]] == [
        (expiry.id, "PENDING", "EXPIRED", False),
        (success.id, "EXPIRED", "SUCCEEDED", True),
    ]
    assert (await payment(pool, payment_id))["status"] == "SUCCEEDED"


async def test_two_different_outcomes_of_many_payments_racing_each_apply_once(pool: asyncpg.Pool) -> None:
    payments = [await known_payment(pool) for _ in range(20)]
    events = [
        event
        for payment_id in payments
        for event in (status_changed(payment_id, S, "webhook", "paid"), status_changed(payment_id, F, "webhook", "no"))
    ]

    # Each event through a ledger of its own (its own store, its own connection), all at once.
    await asyncio.gather(*(record_event(PostgresLedgerStore(pool), event) for event in events))

    for payment_id in payments:
        assert (await payment(pool, payment_id))["status"] == "SUCCEEDED"
        rows = await log_rows(pool, payment_id)
        assert len(rows) == len({r["event_id"] for r in rows}) == 4
        entering = [r for r in rows if r["to_status"] == "SUCCEEDED" and r["from_status"] != "SUCCEEDED"]
        assert len(entering) == 1 and entering[0]["outcome"] == "applied"
        # Each row's from_status is the status the previous row left: no decision was made on a stale state.
        assert [r["from_status"] for r in rows[1:]] == [r["to_status"] for r in rows[:-1]]
