"""One contract for the ledger's storage port, run against both of its implementations (eventsourcing style):
`PostgresLedgerStore` against the real database and its in-memory twin, so the twin the rules' property tests
use behaves as the database does."""

from __future__ import annotations

import secrets
from dataclasses import replace

import asyncpg
import pytest

from services.ledger.postgres_store import PostgresLedgerStore
from services.ledger.store import ALREADY_RECORDED, InMemoryLedgerStore, LedgerStore, LogEntry, PaymentWrite
from shared.events import Envelope, PaymentStatus, ReconcilePayment
from tests.support.payment_histories import event, intent_created, requested, status_changed

P, S, F = PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, PaymentStatus.FAILED


def new_payment_id() -> str:
    return f"pay_{secrets.token_hex(8)}"


def reconciliation_asked(payment_id: str) -> Envelope:
    return event(
        ReconcilePayment(provider="sandbox", provider_payment_id=f"pi_{payment_id}"), payment_id, "reconciliation"
    )


def entry(envelope: Envelope, before: PaymentStatus, after: PaymentStatus, outcome: str = "applied") -> LogEntry:
    return LogEntry.of(envelope, before, after, outcome)


class LedgerStoreContract:
    """What the recording rules rely on; a subclass provides `store`."""

    async def known(self, store: LedgerStore) -> str:
        payment_id = new_payment_id()
        await store.record_requests([requested(payment_id)])
        return payment_id

    async def test_a_requested_payment_starts_pending_at_version_zero_with_its_log_row(
        self, store: LedgerStore
    ) -> None:
        payment_id = new_payment_id()
        request = requested(payment_id)

        outcomes = await store.record_requests([request])

        assert outcomes == {request.id: "applied"}
        stored = (await store.read([payment_id], [request.id]))[payment_id]
        assert (stored.state.status, stored.state.amount, stored.state.currency) == (P, 1999, "USD")
        assert stored.version == 0
        assert stored.seen == {request.id}

    async def test_a_second_request_for_a_payment_is_logged_as_already_recorded(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        again = requested(payment_id).model_copy(update={"id": requested(new_payment_id()).id})

        assert await store.record_requests([again]) == {again.id: ALREADY_RECORDED}

    async def test_a_request_event_recorded_before_gets_no_second_row(self, store: LedgerStore) -> None:
        request = requested(new_payment_id())
        await store.record_requests([request])

        assert await store.record_requests([request]) == {}

    async def test_several_requests_are_recorded_in_one_call(self, store: LedgerStore) -> None:
        requests = [requested(new_payment_id()) for _ in range(3)]

        outcomes = await store.record_requests(requests)

        assert outcomes == {r.id: "applied" for r in requests}
        assert set(await store.read([r.payment_id for r in requests], [])) == {r.payment_id for r in requests}

    async def test_reading_an_unknown_payment_finds_nothing(self, store: LedgerStore) -> None:
        assert await store.read([new_payment_id()], []) == {}

    async def test_a_write_at_the_current_version_logs_applies_and_bumps_the_version(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        success = status_changed(payment_id, S, "webhook", "paid")
        after = replace(stored.state, status=S)

        result = await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(success, P, S),), after, completed=True)]
        )

        assert (result.matched, result.logged) == ({payment_id}, {success.id})
        now = (await store.read([payment_id], [success.id]))[payment_id]
        assert (now.state, now.version, now.seen) == (after, stored.version + 1, {success.id})

    async def test_a_write_at_a_stale_version_writes_nothing(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        created = intent_created(payment_id)
        await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(created, P, P),), replace(stored.state, provider="x"))]
        )
        success = status_changed(payment_id, S, "webhook", "paid")

        result = await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(success, P, S),), replace(stored.state, status=S))]
        )

        assert (result.matched, result.logged) == (set(), set())
        now = (await store.read([payment_id], [success.id]))[payment_id]
        assert (now.state.status, now.state.provider, now.version, now.seen) == (P, "x", stored.version + 1, set())

    async def test_an_event_logged_before_is_not_logged_or_applied_again(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        command = reconciliation_asked(payment_id)
        first = await store.apply_if_unchanged([PaymentWrite(payment_id, stored.version, (entry(command, P, P),))])

        again = await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(command, P, S),), replace(stored.state, status=S))]
        )

        assert first.logged == {command.id}
        assert (again.matched, again.logged) == ({payment_id}, set())
        now = (await store.read([payment_id], []))[payment_id]
        assert (now.state.status, now.version) == (P, stored.version)

    async def test_an_events_status_change_is_read_back_from_its_log_row(self, store: LedgerStore) -> None:
        payment_id = new_payment_id()
        request = requested(payment_id)
        await store.record_requests([request])
        stored = (await store.read([payment_id], []))[payment_id]
        command = reconciliation_asked(payment_id)
        success = status_changed(payment_id, S, "webhook", "paid")
        await store.apply_if_unchanged([PaymentWrite(payment_id, stored.version, (entry(command, P, P),))])
        stored = (await store.read([payment_id], []))[payment_id]
        await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(success, P, S),), replace(stored.state, status=S))]
        )

        # What announcing an event again reads: the change it made, none for one that changed nothing.
        assert await store.status_change(request.id) == (None, P)
        assert await store.status_change(success.id) == (P, S)
        assert await store.status_change(command.id) is None
        assert await store.status_change(requested(new_payment_id()).id) is None

    async def test_a_log_without_a_change_keeps_the_version(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        command = reconciliation_asked(payment_id)

        await store.apply_if_unchanged([PaymentWrite(payment_id, stored.version, (entry(command, P, P),))])

        assert (await store.read([payment_id], []))[payment_id].version == stored.version

    async def test_in_one_write_a_stale_payment_does_not_hold_back_a_fresh_one(self, store: LedgerStore) -> None:
        fresh, stale = await self.known(store), await self.known(store)
        read = await store.read([fresh, stale], [])
        await store.apply_if_unchanged(
            [PaymentWrite(stale, 0, (entry(intent_created(stale), P, P),), replace(read[stale].state, provider="x"))]
        )
        paid = {p: status_changed(p, S, "webhook", "paid") for p in (fresh, stale)}

        result = await store.apply_if_unchanged(
            [
                PaymentWrite(p, read[p].version, (entry(paid[p], P, S),), replace(read[p].state, status=S))
                for p in (fresh, stale)
            ]
        )

        assert (result.matched, result.logged) == ({fresh}, {paid[fresh].id})
        after = await store.read([fresh, stale], [])
        assert (after[fresh].state.status, after[stale].state.status) == (S, P)

    async def test_a_write_whose_before_commit_work_fails_leaves_nothing(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        success = status_changed(payment_id, S, "webhook", "paid")

        async def publish_fails(result: object) -> None:
            raise ConnectionError("broker gone")

        with pytest.raises(ConnectionError):
            await store.apply_if_unchanged(
                [PaymentWrite(payment_id, stored.version, (entry(success, P, S),), replace(stored.state, status=S))],
                before_commit=publish_fails,
            )

        now = (await store.read([payment_id], [success.id]))[payment_id]
        assert (now.state, now.version, now.seen) == (stored.state, stored.version, set())

    async def test_before_commit_work_sees_what_the_write_logged(self, store: LedgerStore) -> None:
        payment_id = await self.known(store)
        stored = (await store.read([payment_id], []))[payment_id]
        failure = status_changed(payment_id, F, "webhook", "declined")
        seen = []

        async def note(result: object) -> None:
            seen.append(result)

        result = await store.apply_if_unchanged(
            [PaymentWrite(payment_id, stored.version, (entry(failure, P, F),), replace(stored.state, status=F))],
            before_commit=note,
        )

        assert seen == [result] and result.logged == {failure.id}


class TestPostgresLedgerStore(LedgerStoreContract):
    @pytest.fixture
    def store(self, pool: asyncpg.Pool) -> LedgerStore:
        return PostgresLedgerStore(pool)


class TestInMemoryLedgerStore(LedgerStoreContract):
    @pytest.fixture
    def store(self) -> LedgerStore:
        return InMemoryLedgerStore()
