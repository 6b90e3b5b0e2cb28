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
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
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

    async def status_change(self, event_id: uuid.UUID) -> tuple[PaymentStatus | None, PaymentStatus] | None:
        """The status change the event made when it was applied ((None, PENDING) for a new payment); None if it
        changed no status (or was not applied). What an event recorded on an earlier delivery announces again."""
        ...


# What a sweep claimed (a payment's or a refund's row: the columns its command needs), handed to `send` before the
# claim commits.
Claimed = Mapping[str, Any]
SendClaimed = Callable[[Sequence[Claimed]], Awaitable[None]]


class SweepStore(Protocol):
    """The sweeps' half of the port (services/ledger/sweeps.py): claiming due payments and refunds, and counting
    what is open. Each claim takes rows no other ledger holds (SKIP LOCKED), marks them claimed, and commits only
    once `send` has returned: a failed send leaves them unclaimed for the next round."""

    async def claim_expirations(self, limit: int, *, resend_after_seconds: float, send: SendClaimed) -> int:
        """PENDING payments past `expires_at`, and AUTHORIZED ones past their hold (id, provider,
        provider_payment_id, status), not claimed in the last `resend_after_seconds`."""
        ...

    async def claim_reconciliations(
        self, limit: int, *, older_than_seconds: float, every_seconds: float, send: SendClaimed
    ) -> int:
        """PENDING payments with an intent and no outcome for `older_than_seconds` (id, provider,
        provider_payment_id, status), not claimed in the last `every_seconds`."""
        ...

    async def claim_refund_reconciliations(
        self, limit: int, *, older_than_seconds: float, every_seconds: float, send: SendClaimed
    ) -> int:
        """Refunds pending for `older_than_seconds`, not claimed in the last `every_seconds` (id, payment_request_id,
        amount, currency, reason, provider_refund_id, provider, provider_payment_id)."""
        ...

    async def pending_payments(self) -> tuple[int, float]:
        """How many payments are PENDING, and the age in seconds of the oldest (0 if none)."""
        ...

    async def open_authorizations(self) -> tuple[int, int]:
        """How many holds are open, and how many are in the last seventh of their life."""
        ...

    async def pending_refunds(self) -> tuple[int, float]:
        """How many refunds are pending, and the age in seconds of the oldest (0 if none)."""
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

    async def status_change(self, event_id: uuid.UUID) -> tuple[PaymentStatus | None, PaymentStatus] | None:
        payment = self.payments.get(self._logged.get(event_id, ""))
        for entry in payment.log if payment is not None else []:
            if entry.event_id == event_id and entry.outcome == "applied" and entry.from_status != entry.to_status:
                return entry.from_status, entry.to_status
        return None

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
