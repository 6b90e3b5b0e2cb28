"""The transactional outbox: how an event is written into it (one way, inside the caller's statement or
transaction), and the relay that publishes committed rows with publisher confirms.

The relay is woken by LISTEN/NOTIFY when a transaction writes rows, with a polling fallback. A batch is
claimed and marked sent in one statement (FOR UPDATE SKIP LOCKED, so several intake processes share one
outbox), published with pipelined confirms, and committed; rows the broker did not confirm are unmarked
before the commit. Rows of one type go as bundles of up to BUNDLE_SIZE (one broker message each, every
envelope with its own trace context and reply key: Broker.publish_bundle), so a busy intake sends a few
messages a batch rather than one a payment; a lone row goes as a message of its own.

A broker outage only delays rows: they stay unsent until a publish is confirmed. A crash between confirm and
commit re-publishes (the consumers are idempotent by event id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.broker import REPLY_TO_HEADER
from shared.events import Envelope, Message, Source
from shared.logs import get_logger
from shared.metrics import OUTBOX_OLDEST_AGE, OUTBOX_PENDING, OUTBOX_PUBLISHED
from shared.supervisor import Backoff, Supervisor
from shared.telemetry import inject_context

log = get_logger(__name__)

CHANNEL = "paystream_outbox"

Publish = Callable[..., Awaitable[None]]
# Publish envelopes of one type as one broker message, each with the headers it was stored with.
PublishBundle = Callable[[Sequence[tuple[Envelope, Mapping[str, Any]]]], Awaitable[None]]
# At most this many rows a bundle: a bundle the gateway_worker retries replays at most this many payments' intents
# (each idempotent at the provider), and one process's share of a burst stays spread over a few messages.
BUNDLE_SIZE = 20
# After a failed round the relay waits 0.5 s, then twice as long each time, at most 5 s: it drains soon
# after the broker is back without hammering it while it is away.
RELAY_BACKOFF = Backoff(initial=0.5, maximum=5.0)
LISTENER_PING_SECONDS = 10.0
# How long a batch's publishes may take, confirms included (the broker down, its connection being restored, a
# confirm that does not come); rows not confirmed by then stay queued for the next round.
PUBLISH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class OutboxRow:
    """An event as the outbox keeps it: the envelope, and the headers it is published with: the trace context
    current when it was written (the relay publishes it in that context, so the payment's trace goes on
    through the broker) and, for a request someone waits on, where to send its outcome (REPLY_TO_HEADER)."""

    envelope: Envelope
    headers: dict[str, Any]

    @classmethod
    def of(cls, message: Message, *, payment_id: str, source: Source, reply_to: str | None = None) -> OutboxRow:
        """`reply_to`: the reply routing key of the process waiting for the message's outcome, if one waits."""
        headers = inject_context({})
        if reply_to is not None:
            headers[REPLY_TO_HEADER] = reply_to
        return cls(Envelope.wrap(message, payment_id=payment_id, source=source), headers)

    def values(self) -> tuple[Any, ...]:
        """The parameters of `insert_sql`, in its order."""
        envelope = self.envelope
        return envelope.id, envelope.payment_id, envelope.type, envelope.model_dump_json(), self.headers


def insert_sql(first: int) -> str:
    """`INSERT INTO intake.outbox ... SELECT` of one row whose five values are $first..$first+4.

    The way a row is written: alone (`enqueue`), or inside a larger statement that appends `FROM ...`
    to write it only when something else was written (a capture). Accepted payments write theirs, the same
    five values, from the arrays of a batch (store._ACCEPT_MANY).
    """
    n = range(first, first + 5)
    return (
        "INSERT INTO intake.outbox (event_id, payment_id, event_type, envelope, headers)"
        f" SELECT ${n[0]}::uuid, ${n[1]}::text, ${n[2]}::text, ${n[3]}::text, ${n[4]}::jsonb"
    )


async def enqueue(conn: asyncpg.Connection, row: OutboxRow) -> None:
    """Write `row` (inside the caller's transaction, if any): it is published once that commits."""
    await conn.execute(insert_sql(1), *row.values())


# Claim a batch and mark it sent in one statement; the caller's transaction holds the rows until it commits.
_CLAIM = """
UPDATE intake.outbox o SET published_at = clock_timestamp()
FROM (SELECT id FROM intake.outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) due
WHERE o.id = due.id
RETURNING o.id, o.envelope, o.headers
"""


class OutboxPublishFailed(Exception):
    """Some rows of a batch were not confirmed by the broker; they stay queued."""


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        *,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        batch_size: int = 100,
        poll_interval: float = 1.0,
        publish_bundle: PublishBundle | None = None,
    ) -> None:
        self._pool = pool
        self._publish = publish
        # None: every row goes as a message of its own.
        self._publish_bundle = publish_bundle
        self._connect = connect
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

    def wake(self, *_: Any) -> None:
        self._wake.set()

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows; returns how many were published and marked.

        Rows the broker confirmed are marked even when others in the batch failed (fewer duplicates after
        an outage); the failures then raise, so the caller backs off and the rest stay queued.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = sorted(await conn.fetch(_CLAIM, self._batch_size), key=lambda r: r["id"])
            if not rows:
                return 0
            results = await self._publish_rows(rows)
            failed = [isinstance(result, BaseException) for result in results]
            unconfirmed = [r["id"] for r, fail in zip(rows, failed, strict=True) if fail]
            if unconfirmed:
                await conn.execute(
                    "UPDATE intake.outbox SET published_at = NULL WHERE id = ANY($1::bigint[])", unconfirmed
                )
        sent = len(rows) - len(unconfirmed)
        OUTBOX_PUBLISHED.inc(sent)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise OutboxPublishFailed(f"{len(failures)} of {len(rows)} rows not confirmed") from failures[0]
        return sent

    async def _publish_rows(self, rows: Sequence[asyncpg.Record]) -> list[BaseException | None]:
        """Publish `rows` (in id order), their confirms awaited together: per row None once confirmed, or the
        error that kept it from the broker (a bundle's, for each of its rows)."""
        envelopes = [Envelope.from_bytes(row["envelope"]) for row in rows]
        if self._publish_bundle is None:
            return await self._publish_each(rows, envelopes)
        publish_bundle = self._publish_bundle
        by_type: dict[str, list[int]] = {}
        for n, envelope in enumerate(envelopes):
            by_type.setdefault(envelope.type, []).append(n)
        bundles = [
            positions[start : start + BUNDLE_SIZE]
            for positions in by_type.values()
            for start in range(0, len(positions), BUNDLE_SIZE)
        ]
        found = await asyncio.gather(
            *(publish_bundle([(envelopes[n], rows[n]["headers"]) for n in bundle]) for bundle in bundles),
            return_exceptions=True,
        )
        results: list[BaseException | None] = [None] * len(rows)
        for bundle, result in zip(bundles, found, strict=True):
            if isinstance(result, BaseException):
                for n in bundle:
                    results[n] = result
        return results

    async def _publish_each(
        self, rows: Sequence[asyncpg.Record], envelopes: Sequence[Envelope]
    ) -> list[BaseException | None]:
        """Publish `rows` (their `envelopes`) each as a message of its own, their confirms awaited together under
        one deadline; each row's outcome (None: confirmed). One timer for the batch rather than one a publish (a
        tenth of a publish's CPU); a row not confirmed by the deadline failed, like one the broker refused. Each row
        goes out as the bytes it was stored as (`body`): parsed once, to check it and for the message's properties,
        never serialized again."""
        outcomes: list[BaseException | None] = [None] * len(rows)
        ended = [False] * len(rows)

        async def publish(index: int, envelope: Envelope, row: asyncpg.Record) -> None:
            try:
                await self._publish(envelope, headers=row["headers"], body=row["envelope"].encode(), timeout=None)
            except Exception as exc:
                outcomes[index] = exc
            ended[index] = True

        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await asyncio.gather(*(publish(i, envelopes[i], row) for i, row in enumerate(rows)))
        except TimeoutError:
            for index, done in enumerate(ended):
                if not done:
                    outcomes[index] = TimeoutError(f"not confirmed within {PUBLISH_TIMEOUT_SECONDS:g} s")
        return outcomes

    async def measure(self) -> None:
        row = await self._pool.fetchrow(
            """
            SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest
            FROM intake.outbox WHERE published_at IS NULL
            """
        )
        assert row is not None
        OUTBOX_PENDING.set(row["pending"])
        OUTBOX_OLDEST_AGE.set(float(row["oldest"]))

    def start(self, supervisor: Supervisor) -> None:
        """Run the relay and its listener as loops of the process's supervisor (shared/supervisor.py)."""
        supervisor.start("outbox relay", self.run, backoff=RELAY_BACKOFF)
        supervisor.start("outbox listener", self.listen)

    async def listen(self) -> None:
        """Hold a LISTEN connection, so a commit wakes the relay at once. Raises when the connection drops or
        stops answering: the supervisor opens another after its backoff (polling covers the gap)."""
        conn = await self._connect()
        try:
            await self._hold_listener(conn)
        finally:
            try:
                await conn.close(timeout=5)
            except (Exception, asyncio.CancelledError):
                conn.terminate()  # a silent connection does not answer a goodbye either
                raise
        raise ConnectionError("the outbox listener's connection closed")

    async def _hold_listener(self, conn: asyncpg.Connection) -> None:
        """LISTEN on `conn` until it terminates."""
        closed = asyncio.Event()
        conn.add_termination_listener(lambda *_: closed.set())
        await conn.add_listener(CHANNEL, self.wake)
        self.wake()  # rows written while we were not listening
        while not closed.is_set():
            try:
                await asyncio.wait_for(closed.wait(), timeout=LISTENER_PING_SECONDS)
            except TimeoutError:
                # A connection dropped without a word looks open: a round trip finds out.
                await conn.execute("SELECT 1", timeout=5)

    async def run(self) -> None:
        """Publish committed rows, woken by the listener or every `poll_interval`. A round that fails (the broker
        away) raises, its rows still queued: the supervisor runs this again after RELAY_BACKOFF."""
        while True:
            self._wake.clear()
            await self._drain()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            except TimeoutError:
                pass

    async def _drain(self) -> None:
        """Publish batches until a partial one."""
        try:
            while await self.publish_batch() == self._batch_size:
                pass
        except Exception as exc:
            cause = exc.__cause__ or exc
            log.warning(
                "outbox relay round failed; rows stay queued",
                error=f"{type(exc).__name__}: {exc}",
                cause=f"{type(cause).__name__}: {cause}",
            )
            raise
