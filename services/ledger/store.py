"""The ledger's storage port: what recording events needs from its tables, and an in-memory twin of it.

Three operations, each written for a batch so that a batch of events costs a few statements, not a few per event:
- `record_requests`: create payments (PaymentRequested), each with its log row;
- `read`: the payments' current state and version, and which of the given events they already logged;
- `apply_if_unchanged`: per payment, write its new log rows and its new state, only if its version is still the
  one the decision was made on (a compare-and-set); a payment that moved meanwhile gets nothing written.

`PostgresLedgerStore` (services/ledger/postgres_store.py) is the real one; `InMemoryLedgerStore` below is its
twin for tests of the recording rules. Both pass the one contract suite (tests/integration/test_ledger_store.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from services.ledger.state_machine import PaymentState
from shared.events import Envelope, PaymentRequested, PaymentStatus

ALREADY_RECORDED = "ignored: payment already recorded"


@dataclass(frozen=True)
class StoredPayment:
    """A payment as the store holds it: the state the rules read, its version, and when it was created."""

    state: PaymentState
    version: int
    created_at: datetime
    # Of the event ids asked about in `read`, those this payment has already logged.
    seen: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True)
class LogEntry:
    """One row of ledger.payment_logs, as the recording rules decided it."""

    event_id: uuid.UUID
    event_type: str
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    source: str
    outcome: str
    late_success: bool
    payload: dict[str, Any]
    occurred_at: datetime

    @classmethod
    def of(
        cls,
        envelope: Envelope,
        from_status: PaymentStatus | None,
        to_status: PaymentStatus,
        outcome: str,
        *,
        late_success: bool = False,
    ) -> LogEntry:
        return cls(
            event_id=envelope.id,
            event_type=envelope.type,
            from_status=from_status,
            to_status=to_status,
            source=envelope.source,
            outcome=outcome,
            late_success=late_success,
            payload=envelope.model_dump(mode="json"),
            occurred_at=envelope.occurred_at,
        )


@dataclass(frozen=True)
class PaymentWrite:
    """What a batch does to one payment: log `entries` and, if `after` is set, move it to `after`."""

    payment_id: str
    version: int  # the version the decisions were made on
    entries: tuple[LogEntry, ...]
    after: PaymentState | None = None
    completed: bool = False  # the payment entered a terminal status (sets completed_at)


@dataclass(frozen=True)
class WriteResult:
    """Which payments were still at their version (written), and which events got a new log row."""

    matched: frozenset[str]
    logged: frozenset[uuid.UUID]


# Work that must succeed before the write becomes durable (publishing a follow-up command): if it raises,
# nothing of the write is kept.
BeforeCommit = Callable[[WriteResult], Awaitable[None]]


class LedgerStore(Protocol):
    """The port the recording rules (services/ledger/handlers.py) use; the ledger's only SQL lives behind it."""

    async def record_requests(self, requests: Sequence[Envelope]) -> dict[uuid.UUID, str]:
        """Create each requested payment unless it exists, with its log row (`applied`, or ALREADY_RECORDED
        for a payment that existed); returns the outcome of each event whose log row is new.

        The requests must be of distinct payments and distinct events (the caller splits repeats)."""
        ...

    async def read(self, payment_ids: Collection[str], event_ids: Collection[uuid.UUID]) -> dict[str, StoredPayment]:
        """The payments of `payment_ids` that exist, each with those of `event_ids` it has already logged."""
        ...

    async def apply_if_unchanged(
        self, writes: Sequence[PaymentWrite], *, before_commit: BeforeCommit | None = None
    ) -> WriteResult:
        """Per write, if its payment is still at `version`: log its entries (an event already logged is
        skipped) and apply `after` (bumping the version). All of it, with `before_commit`, or nothing."""
        ...


def new_payment_state(request: PaymentRequested) -> PaymentState:
    return PaymentState(
        status=PaymentStatus.PENDING,
        amount=request.amount,
        currency=request.currency,
        capture_method=request.capture_method,
    )


@dataclass
class _MemoryPayment:
    stored: StoredPayment
    log: list[LogEntry] = field(default_factory=list)


class InMemoryLedgerStore:
    """The store in a dict, with the same contract as PostgresLedgerStore: the rules' tests run on it."""

    def __init__(self) -> None:
        self.payments: dict[str, _MemoryPayment] = {}
        self._logged: dict[uuid.UUID, str] = {}  # event id → payment id, as the unique index on event_id
        self._lock = asyncio.Lock()  # one write at a time, as a transaction would be

    def state(self, payment_id: str) -> PaymentState | None:
        payment = self.payments.get(payment_id)
        return None if payment is None else payment.stored.state

    def log(self, payment_id: str) -> list[LogEntry]:
        payment = self.payments.get(payment_id)
        return [] if payment is None else list(payment.log)

    async def record_requests(self, requests: Sequence[Envelope]) -> dict[uuid.UUID, str]:
        outcomes: dict[uuid.UUID, str] = {}
        async with self._lock:
            for envelope in requests:
                request = envelope.message()
                assert isinstance(request, PaymentRequested)
                payment = self.payments.get(envelope.payment_id)
                outcome = ALREADY_RECORDED
                if payment is None:
                    outcome = "applied"
                    stored = StoredPayment(new_payment_state(request), 0, request.created_at)
                    payment = self.payments[envelope.payment_id] = _MemoryPayment(stored)
                if envelope.id in self._logged:
                    continue
                payment.log.append(LogEntry.of(envelope, None, payment.stored.state.status, outcome))
                self._logged[envelope.id] = envelope.payment_id
                outcomes[envelope.id] = outcome
        return outcomes

    async def read(self, payment_ids: Collection[str], event_ids: Collection[uuid.UUID]) -> dict[str, StoredPayment]:
        wanted = set(event_ids)
        found = {}
        for payment_id in payment_ids:
            payment = self.payments.get(payment_id)
            if payment is not None:
                seen = frozenset(e.event_id for e in payment.log if e.event_id in wanted)
                found[payment_id] = replace(payment.stored, seen=seen)
        return found

    async def apply_if_unchanged(
        self, writes: Sequence[PaymentWrite], *, before_commit: BeforeCommit | None = None
    ) -> WriteResult:
        async with self._lock:
            saved = {pid: (p.stored, list(p.log)) for pid, p in self.payments.items()}
            saved_logged = dict(self._logged)
            matched, logged = self._write(writes)
            result = WriteResult(frozenset(matched), frozenset(logged))
            if before_commit is not None:
                try:
                    await before_commit(result)
                except BaseException:
                    for pid, (stored, log) in saved.items():
                        self.payments[pid].stored, self.payments[pid].log = stored, log
                    self._logged = saved_logged
                    raise
            return result

    def _write(self, writes: Iterable[PaymentWrite]) -> tuple[set[str], set[uuid.UUID]]:
        matched: set[str] = set()
        logged: set[uuid.UUID] = set()
        for write in writes:
            payment = self.payments.get(write.payment_id)
            if payment is None or payment.stored.version != write.version:
                continue
            matched.add(write.payment_id)
            new = [entry for entry in write.entries if entry.event_id not in self._logged]
            for entry in new:
                payment.log.append(entry)
                self._logged[entry.event_id] = write.payment_id
                logged.add(entry.event_id)
            if new and write.after is not None:
                payment.stored = replace(payment.stored, state=write.after, version=payment.stored.version + 1)
        return matched, logged
