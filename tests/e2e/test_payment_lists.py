"""GET /v1/payments and GET /v1/events pages (issue 11, docs/reference/merchant-webhooks.md): newest first, cursor
pagination that never
skips or repeats an item while new ones are created, filters, and one merchant's items only."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.support.client import IntakeClient, payment_body
from tests.support.problem_json import problem_of
from tests.support.processes import eventually


async def page(intake: IntakeClient, path: str, **query: Any) -> dict[str, Any]:
    async with intake.session.get(f"{intake.base_url}{path}?{urlencode(query)}", headers=intake.headers()) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def create_many(intake: IntakeClient, count: int, reference: str | None = None) -> list[str]:
    created = await asyncio.gather(
        *(
            intake.create(payment_body(reference=reference or f"order-{secrets.token_hex(4)}"), wait=0)
            for _ in range(count)
        )
    )
    assert all(status == 201 for status, _, _ in created)
    return [payment["id"] for _, payment, _ in created]


async def recorded(intake: IntakeClient, ids: list[str], since: datetime) -> None:
    async def all_listed() -> bool:
        listed = await page(intake, "/v1/payments", limit=100, **{"created[gte]": since.isoformat()})
        return set(ids) <= {p["id"] for p in listed["data"]}

    await eventually(all_listed, timeout=30, what="the payments recorded by the ledger")


async def test_paging_never_skips_or_repeats_a_payment_while_new_ones_are_created(intake: IntakeClient) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    existing = await create_many(intake, 12)
    await recorded(intake, existing, since)

    seen: list[str] = []
    cursor: dict[str, str] = {}
    while True:
        await create_many(intake, 2)  # new payments keep arriving between pages
        current = await page(intake, "/v1/payments", limit=5, **{"created[gte]": since.isoformat()}, **cursor)
        assert len(current["data"]) <= 5
        stamps = [p["created_at"] for p in current["data"]]
        assert stamps == sorted(stamps, reverse=True)  # newest first
        seen.extend(p["id"] for p in current["data"])
        if not current["has_more"]:
            break
        cursor = {"starting_after": current["data"][-1]["id"]}
    assert len(seen) == len(set(seen)), "a payment was listed twice"
    assert set(existing) <= set(seen), "a payment was skipped"

    # Back from the oldest, with ending_before: the same payments in the same order.
    back: list[str] = []
    cursor = {"ending_before": seen[-1]}
    while True:
        current = await page(intake, "/v1/payments", limit=4, **{"created[gte]": since.isoformat()}, **cursor)
        back = [p["id"] for p in current["data"]] + back
        if not current["has_more"]:
            break
        cursor = {"ending_before": current["data"][0]["id"]}
    assert len(back) == len(set(back)), "a payment was listed twice"
    # Everything newer than the oldest seen: what the first pass saw, in the same order, plus newer arrivals.
    assert [payment_id for payment_id in back if payment_id in set(seen)] == seen[:-1]


async def test_filters_select_by_status_reference_and_creation_time(intake: IntakeClient) -> None:
    reference = f"order-{secrets.token_hex(6)}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = await create_many(intake, 3, reference)
    await recorded(intake, ids, since)
    by_reference = await page(intake, "/v1/payments", reference=reference)
    assert sorted(p["id"] for p in by_reference["data"]) == sorted(ids) and not by_reference["has_more"]
    pending = await page(intake, "/v1/payments", reference=reference, status="PENDING")
    assert all(p["status"] == "PENDING" for p in pending["data"])
    assert (await page(intake, "/v1/payments", reference=reference, status="EXPIRED"))["data"] == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await page(intake, "/v1/payments", reference=reference, **{"created[gte]": future}))["data"] == []
    past = int((since - timedelta(days=1)).timestamp())
    assert (await page(intake, "/v1/payments", reference=reference, **{"created[lte]": past}))["data"] == []
    assert len((await page(intake, "/v1/payments", reference=reference, limit=2))["data"]) == 2


async def test_customer_email_finds_a_customers_payments_whatever_the_case_typed(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    customer = f"Ada.{secrets.token_hex(4)}@Example.COM"
    since = datetime.now(UTC) - timedelta(seconds=1)
    created = [await intake.create(payment_body(customer_email=customer), wait=0) for _ in range(2)]
    assert all(status == 201 for status, _, _ in created)
    ids = [payment["id"] for _, payment, _ in created]
    others = await create_many(intake, 1)  # a payment of another customer (none given) is never found
    await recorded(intake, ids + others, since)
    for typed in (customer, customer.lower(), customer.upper()):
        found = await page(intake, "/v1/payments", customer_email=typed)
        assert sorted(p["id"] for p in found["data"]) == sorted(ids), typed
        assert all(p["customer_email"] == customer for p in found["data"])
    assert (await page(intake, "/v1/payments", customer_email="nobody@example.com"))["data"] == []
    other = IntakeClient(http, intake.base_url, api_key="sk_test_other")
    assert (await page(other, "/v1/payments", customer_email=customer))["data"] == []
    for bad in ("", "a" * 255):
        async with http.get(
            f"{intake.base_url}/v1/payments?{urlencode({'customer_email': bad})}", headers=intake.headers()
        ) as r:
            await problem_of(r, 422, "validation-error")


async def test_a_merchant_lists_only_its_own_payments(intake: IntakeClient, http: aiohttp.ClientSession) -> None:
    reference = f"order-{secrets.token_hex(6)}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = await create_many(intake, 2, reference)
    await recorded(intake, ids, since)
    other = IntakeClient(http, intake.base_url, api_key="sk_test_other")
    assert (await page(other, "/v1/payments", reference=reference))["data"] == []
    async with http.get(f"{intake.base_url}/v1/payments?starting_after={ids[0]}", headers=other.headers()) as r:
        await problem_of(r, 404, "payment-not-found")  # another merchant's payment is no cursor


async def test_bad_list_parameters_are_problems(intake: IntakeClient, http: aiohttp.ClientSession) -> None:
    for path, item in (("/v1/payments", "payment"), ("/v1/events", "event")):
        for query in ("limit=0", "limit=101", "limit=ten", "limit=1&limit=2"):
            async with http.get(f"{intake.base_url}{path}?{query}", headers=intake.headers()) as r:
                await problem_of(r, 422, "validation-error")
        for query in ("starting_after=nope_1", "ending_before=nope_1"):
            async with http.get(f"{intake.base_url}{path}?{query}", headers=intake.headers()) as r:
                await problem_of(r, 404, f"{item}-not-found")
    for query in ("status=PAID", "created[gte]=yesterday"):
        async with http.get(f"{intake.base_url}/v1/payments?{query}", headers=intake.headers()) as r:
            await problem_of(r, 422, "validation-error")
    async with http.get(f"{intake.base_url}/v1/events?type=payment.refunded", headers=intake.headers()) as r:
        await problem_of(r, 422, "validation-error")
    async with http.get(f"{intake.base_url}/v1/payments") as r:
        await problem_of(r, 401)


async def test_events_are_listed_newest_first_a_page_at_a_time(intake: IntakeClient) -> None:
    ids = await create_many(intake, 4)

    async def events_of_all() -> list[dict[str, Any]] | None:
        found = []
        for payment_id in ids:
            listed = await page(intake, "/v1/events", payment_id=payment_id, type="payment.created")
            found.extend(listed["data"])
        return found if len(found) == len(ids) else None

    events = await eventually(events_of_all, timeout=30, what="payment.created events")
    wanted = {e["id"] for e in events}
    seen: list[str] = []
    cursor: dict[str, str] = {}
    while not wanted <= set(seen):
        current = await page(intake, "/v1/events", limit=3, type="payment.created", **cursor)
        assert all(e["type"] == "payment.created" for e in current["data"])
        seen.extend(e["id"] for e in current["data"])
        assert current["data"], "ran out of events before finding ours"
        cursor = {"starting_after": current["data"][-1]["id"]}
    assert len(seen) == len(set(seen))
    created = [e["created"] for e in current["data"]]
    assert created == sorted(created, reverse=True)


async def test_the_summary_counts_and_sums_by_status_and_currency_in_a_time_range(
    intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    made = [
        await intake.create(payment_body(amount=amount, currency=currency), wait=0)
        for amount, currency in ((100, "JPY"), (250, "JPY"), (1999, "KWD"))
    ]
    assert all(status == 201 for status, _, _ in made)
    await recorded(intake, [payment["id"] for _, payment, _ in made], since)
    window = {"created[gte]": since.isoformat(), "created[lte]": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    summary = await page(intake, "/v1/payments/summary", **window)
    totals = {(t["status"], t["currency"]): (t["count"], t["amount"]) for t in summary["data"]}
    # Payments of other tests may fall in the window too: ours are at least counted, the currencies never mixed.
    assert totals[("PENDING", "JPY")][0] >= 2 and totals[("PENDING", "JPY")][1] >= 350
    assert totals[("PENDING", "KWD")][0] >= 1 and totals[("PENDING", "KWD")][1] >= 1999
    future = {"created[gte]": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert (await page(intake, "/v1/payments/summary", **future))["data"] == []
    other = IntakeClient(http, intake.base_url, api_key="sk_test_other")
    theirs = await page(other, "/v1/payments/summary", **window)
    assert ("PENDING", "KWD") not in {(t["status"], t["currency"]) for t in theirs["data"]} or all(
        t["amount"] < 1999 for t in theirs["data"] if t["currency"] == "KWD"
    )
    async with http.get(f"{intake.base_url}/v1/payments/summary?created[gte]=yesterday", headers=intake.headers()) as r:
        await problem_of(r, 422, "validation-error")
    async with http.get(f"{intake.base_url}/v1/payments/summary") as r:
        await problem_of(r, 401)
