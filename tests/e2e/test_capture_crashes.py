"""Captures and voids while the gateway_worker and the ledger are SIGKILLed (docs/reference/capture.md).

Held payments (the sandbox's autopay authorizes each manual payment as it is opened) are captured, in part or
whole, voided, captured twice under two keys, or captured and voided at once, all together; meanwhile the
gateway_worker is killed while it is answering those commands, and then the ledger while it is recording the
answers, each started again. A command the gateway_worker was executing when it died is delivered again and asks
the sandbox again under the same idempotency key, which answers without taking the money twice.

Afterwards every payment has ended in one state, the state the sandbox has for its intent, with the amount the
sandbox took; no intent was captured twice; and no status change lacks its log row or has two.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.db import create_pool
from tests.support.client import IntakeClient, payment_body, sandbox_intent
from tests.support.infra import Servers
from tests.support.own_stack import own_stack
from tests.support.processes import Stack, eventually

# Enough that the answers after the gateway_worker's restart take the ledger several batches (of up to 100
# messages: an answer and a webhook a payment): with fewer, one batch could record them all before the ledger is
# killed, and the kill would find no work left.
PAYMENTS = 200
# What is asked of each payment, in turn: (capture amounts, each under its own key; whether a void is sent too).
PLANS: tuple[tuple[tuple[int, ...], bool], ...] = (
    ((1200,), False),  # a partial capture
    ((), True),  # a void
    ((1999,), False),  # the whole hold
    ((1000, 1500), False),  # two captures with different keys: one takes the money
    ((1500,), True),  # a capture and a void together: the sandbox decides
)
SANDBOX_STATUS = {"succeeded": "SUCCEEDED", "canceled": "CANCELED"}


@pytest.fixture(scope="module")
async def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with own_stack(
        servers,
        tmp_path_factory.mktemp("capture_crashes"),
        ("intake_api", "gateway_worker", "webhook_receiver", "ledger", "sandbox_gateway"),
        SANDBOX_AUTOPAY="succeed",
        GATEWAY_RETRY_BASE_SECONDS="0.2",
        LEDGER_RETRY_BASE_SECONDS="0.2",
    ) as running:
        yield running


async def count(pool: asyncpg.Pool, payment_ids: list[str], condition: str) -> int:
    return int(
        await pool.fetchval(
            f"SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[]) AND {condition}", payment_ids
        )
    )


async def held_payments(intake: IntakeClient, pool: asyncpg.Pool) -> list[dict[str, Any]]:
    payments = []
    for _ in range(PAYMENTS):
        status, payment, _ = await intake.create(payment_body(capture_method="manual"), wait=10)
        assert status == 201 and payment["checkout_url"], payment
        payments.append(payment)
    ids = [p["id"] for p in payments]

    async def all_held() -> bool:
        return await count(pool, ids, "status = 'AUTHORIZED'") == len(ids)

    await eventually(all_held, timeout=60, interval=0.2, what="every payment AUTHORIZED")
    return payments


async def ask(intake: IntakeClient, payment_id: str, captures: tuple[int, ...], void: bool) -> None:
    """The plan's commands for one payment, sent together; each accepted (202) while the payment is held.

    Commands sent together race: one that reaches the intake after another has already ended the hold is refused
    with 409 naming the state the hold ended in, as the API promises; a lone command is always accepted.
    """
    requests = [intake.capture(payment_id, amount, key=secrets.token_hex(8)) for amount in captures]
    answers = await asyncio.gather(*requests, *([intake.cancel(payment_id)] if void else []))
    codes = [answer[0] for answer in answers]
    assert 202 in codes and set(codes) <= {202, 409}, answers
    for code, body, *_ in answers:
        if code == 409:
            assert len(answers) > 1 and ("CANCELED" in body["detail"] or "SUCCEEDED" in body["detail"]), answers


async def test_captures_and_voids_survive_sigkills_of_the_gateway_worker_and_the_ledger(stack: Stack) -> None:
    pool = await create_pool(stack.env["DATABASE_URL"], max_size=2)
    try:
        async with aiohttp.ClientSession() as http:
            intake = IntakeClient(http, stack.url("intake_api"))
            payments = await held_payments(intake, pool)
            ids = [p["id"] for p in payments]
            plans = {p["id"]: PLANS[i % len(PLANS)] for i, p in enumerate(payments)}

            asking = asyncio.gather(*(ask(intake, pid, *plans[pid]) for pid in ids))

            async def some_answered(share: float) -> bool:
                return await count(pool, ids, "status <> 'AUTHORIZED'") >= int(PAYMENTS * share)

            # The gateway_worker dies while the sandbox's answers are coming in, then the ledger while recording.
            await eventually(lambda: some_answered(0.15), timeout=60, interval=0.02, what="the first answers")
            stack["gateway_worker"].kill()
            unanswered_at_gateway_kill = PAYMENTS - await count(pool, ids, "status <> 'AUTHORIZED'")
            await asking
            stack["gateway_worker"].start()
            await stack["gateway_worker"].wait_ready()
            await eventually(lambda: some_answered(0.5), timeout=60, interval=0.02, what="half the answers")
            stack["ledger"].kill()
            unrecorded_at_ledger_kill = PAYMENTS - await count(pool, ids, "status <> 'AUTHORIZED'")
            stack["ledger"].start()
            await stack["ledger"].wait_ready()

            async def all_ended() -> bool:
                return await count(pool, ids, "status IN ('SUCCEEDED', 'CANCELED')") == len(ids)

            await eventually(all_ended, timeout=180, interval=0.5, what="every payment captured or voided")
            await asyncio.sleep(1)  # a late duplicate answer would land now: it must change nothing
            # Each was killed with work left to do, or the test proved nothing.
            assert unanswered_at_gateway_kill > 0 and unrecorded_at_ledger_kill > 0

            rows = {
                r["id"]: r
                for r in await pool.fetch(
                    "SELECT id, status, amount_captured FROM ledger.payment_requests WHERE id = ANY($1::text[])", ids
                )
            }
            for payment in payments:
                row, (captures, void) = rows[payment["id"]], plans[payment["id"]]
                intent = await sandbox_intent(http, payment["checkout_url"])
                # One state, the sandbox's, with the amount the sandbox took.
                assert (row["status"], row["amount_captured"]) == (
                    SANDBOX_STATUS[intent["status"]],
                    intent["amount_captured"],
                ), payment["id"]
                if not void:
                    assert row["status"] == "SUCCEEDED" and row["amount_captured"] in captures, payment["id"]
                elif not captures:
                    assert row["status"] == "CANCELED", payment["id"]
                # Never captured twice: one capture (or void) announced by the sandbox per intent.
                async with http.get(f"{stack.url('sandbox_gateway')}/v1/intents/{intent['id']}/webhooks") as response:
                    attempts = (await response.json())["data"]
                ends = {a["event_id"] for a in attempts if a["type"] in ("payment.captured", "payment.canceled")}
                assert len(ends) == 1, (payment["id"], attempts)
        await assert_one_log_row_per_change(pool, ids)
    finally:
        await pool.close()


async def assert_one_log_row_per_change(pool: asyncpg.Pool, payment_ids: list[str]) -> None:
    rows = await pool.fetch(
        "SELECT payment_request_id, event_id, from_status, to_status, outcome FROM ledger.payment_logs"
        " WHERE payment_request_id = ANY($1::text[])",
        payment_ids,
    )
    assert len({r["event_id"] for r in rows}) == len(rows), "an event logged twice"
    changes: dict[str, list[tuple[str, str]]] = {p: [] for p in payment_ids}
    for r in rows:
        if r["outcome"] == "applied" and r["from_status"] is not None and r["from_status"] != r["to_status"]:
            changes[r["payment_request_id"]].append((r["from_status"], r["to_status"]))
    odd = {
        p: got
        for p, got in changes.items()
        if sorted(got)
        not in (
            [("AUTHORIZED", "SUCCEEDED"), ("PENDING", "AUTHORIZED")],
            [("AUTHORIZED", "CANCELED"), ("PENDING", "AUTHORIZED")],
        )
    }
    assert odd == {}, "a payment whose hold did not end exactly once"
