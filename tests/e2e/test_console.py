"""The console (issue 22, docs/reference/console.md) over HTTP, against the real intake API of the end-to-end stack:
signing in and out, where a person lands after sign-in, hostile data shown as text, CSRF and same-origin on every
form, the intake being down, and each page's content."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import markupsafe
import pytest

from tests.support.client import IntakeClient, payment_body, simulate_card
from tests.support.console import DEMO_KEY, ConsoleVisitor, console_visitor, csrf_token
from tests.support.processes import Stack, eventually, free_port

SCRIPT = "<script>alert('x')</script>"
ATTRIBUTE_BREAK = '"><img src=x onerror=alert(1)>'


@pytest.fixture
async def visitor(stack: Stack) -> AsyncIterator[ConsoleVisitor]:
    async with console_visitor(stack.url("intake_api")) as running:
        yield running


@pytest.fixture
async def signed_in(visitor: ConsoleVisitor) -> ConsoleVisitor:
    response = await visitor.sign_in()
    assert response.status == 303, await response.text()
    return visitor


async def listed(intake: IntakeClient, payment: dict) -> None:
    """Wait until the ledger has recorded the payment: the console lists what GET /v1/payments lists."""
    query = urlencode({"reference": payment["reference"], "limit": 100})

    async def recorded() -> bool:
        async with intake.session.get(f"{intake.base_url}/v1/payments?{query}", headers=intake.headers()) as r:
            return r.status == 200 and payment["id"] in {p["id"] for p in (await r.json())["data"]}

    await eventually(recorded, timeout=30, what=f"payment {payment['id']} listed")


async def new_payment(intake: IntakeClient, **fields: object) -> dict:
    status, payment, _ = await intake.create(payment_body(**fields), wait=0)
    assert status == 201, payment
    await listed(intake, payment)
    return payment


async def test_a_wrong_key_is_said_to_be_wrong_and_signs_nobody_in(visitor: ConsoleVisitor) -> None:
    response = await visitor.sign_in("sk_test_not_a_key")
    page = await response.text()
    assert response.status == 401
    assert "That API key is not valid." in page
    assert "sk_test_not_a_key" not in page  # what was typed is never sent back
    assert (await visitor.get("/payments")).status == 303


async def test_sign_in_lands_where_the_person_was_going_and_sign_out_ends_the_session(visitor: ConsoleVisitor) -> None:
    going = await visitor.get("/payments?status=FAILED")
    assert going.status == 303
    location = going.headers["Location"]
    assert urlsplit(location).path == "/sign-in"
    next_path = parse_qs(urlsplit(location).query)["next"][0]
    assert next_path == "/payments?status=FAILED"
    signed = await visitor.post("/sign-in", {"api_key": DEMO_KEY, "next": next_path}, from_page=location)
    assert (signed.status, signed.headers["Location"]) == (303, "/payments?status=FAILED")
    overview = await visitor.page("/")
    assert "Signed in with key …demo" in overview and "Sign out" in overview

    out = await visitor.post("/sign-out", {"csrf_token": csrf_token(overview)})
    assert (out.status, out.headers["Location"]) == (303, "/sign-in?signed_out=1")
    assert (await visitor.get("/")).status == 303


@pytest.mark.parametrize(
    "offered", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "evil"]
)
async def test_after_sign_in_only_a_path_of_the_console_is_followed(visitor: ConsoleVisitor, offered: str) -> None:
    signed = await visitor.post("/sign-in", {"api_key": DEMO_KEY, "next": offered}, from_page="/sign-in")
    assert (signed.status, signed.headers["Location"]) == (303, "/")


async def test_an_expired_session_goes_back_to_sign_in_and_keeps_the_page(visitor: ConsoleVisitor) -> None:
    too_old = visitor.settings.console_session_max_age_seconds + 60
    visitor.forge_session({"api_key": DEMO_KEY, "key_hint": "demo"}, age_seconds=too_old)
    response = await visitor.get("/payments?q=order-7")
    assert response.status == 303
    assert response.headers["Location"] == "/sign-in?next=%2Fpayments%3Fq%3Dorder-7"
    # An htmx request is told to load the sign-in page whole, keeping the page the person was on.
    visitor.forge_session({"api_key": DEMO_KEY, "key_hint": "demo"}, age_seconds=too_old)
    partial = await visitor.get(
        "/payments?status=FAILED",
        headers={"HX-Request": "true", "HX-Current-URL": f"{visitor.origin}/payments?q=abc"},
    )
    assert partial.status == 204
    assert partial.headers["HX-Redirect"] == "/sign-in?next=%2Fpayments%3Fq%3Dabc"


async def test_a_form_posted_after_the_session_ended_goes_to_sign_in_and_back_to_its_page(
    visitor: ConsoleVisitor,
) -> None:
    too_old = visitor.settings.console_session_max_age_seconds + 60
    visitor.forge_session({"api_key": DEMO_KEY, "key_hint": "demo"}, age_seconds=too_old)
    posted = await visitor.client.post(
        "/payments/pay_0123/refunds",
        data={"amount": "1"},
        headers={"Origin": visitor.origin, "Referer": f"{visitor.origin}/payments/pay_0123?done=refund"},
        allow_redirects=False,
    )
    assert posted.status == 303
    assert posted.headers["Location"] == "/sign-in?next=%2Fpayments%2Fpay_0123%3Fdone%3Drefund"
    # A Referer from another site is no place to come back to.
    visitor.forge_session({"api_key": DEMO_KEY, "key_hint": "demo"}, age_seconds=too_old)
    elsewhere = await visitor.client.post(
        "/payments/pay_0123/refunds",
        data={"amount": "1"},
        headers={"Referer": "https://evil.example/payments"},
        allow_redirects=False,
    )
    assert (elsewhere.status, elsewhere.headers["Location"]) == (303, "/sign-in?next=%2F")


async def test_markup_a_customer_typed_is_shown_as_text(signed_in: ConsoleVisitor, intake: IntakeClient) -> None:
    reference = f"{SCRIPT}{secrets.token_hex(3)}"
    email = f"{ATTRIBUTE_BREAK.replace(' ', '/')}{secrets.token_hex(3)}@example.com"
    payment = await new_payment(
        intake,
        reference=reference,
        description=ATTRIBUTE_BREAK,
        customer_email=email,
        metadata={"<b>note</b>": SCRIPT, "cart": ATTRIBUTE_BREAK},
    )
    pages = [
        await signed_in.page(f"/payments/{payment['id']}"),
        await signed_in.page("/payments?" + urllib_query(q=reference)),
        await signed_in.page("/payments?" + urllib_query(q=email)),
    ]
    for page in pages:
        for hostile in (reference, email, ATTRIBUTE_BREAK, SCRIPT, "<b>note</b>"):
            assert hostile not in page, f"{hostile!r} reached the page unescaped"
        assert escaped(reference) in page
        assert "<img" not in page and "onerror=alert(1)>" not in page.replace(escaped(ATTRIBUTE_BREAK), "")
    detail = pages[0]
    for shown in (ATTRIBUTE_BREAK, email, SCRIPT, "<b>note</b>"):
        assert escaped(shown) in detail
    assert payment["id"] in pages[1] and payment["id"] in pages[2]


def escaped(text: str) -> str:
    """Text as the console's templates write it into a page (Jinja's autoescape)."""
    return str(markupsafe.escape(text))


def urllib_query(**query: str) -> str:
    return urlencode(query)


def closed_endpoint_url() -> str:
    """A webhook URL of this machine where nothing listens: deliveries to it fail at once, never leaving it."""
    return f"http://127.0.0.1:{free_port()}/hooks-{secrets.token_hex(3)}"


async def test_every_form_needs_its_csrf_token(signed_in: ConsoleVisitor, intake: IntakeClient) -> None:
    payment = await new_payment(intake)
    event_id = "evt_" + "0" * 32
    endpoint_id = "we_" + "0" * 24
    posts = [
        "/sign-out",
        f"/payments/{payment['id']}/refunds",
        f"/payments/{payment['id']}/capture",
        f"/payments/{payment['id']}/void",
        "/developers/webhooks",
        f"/developers/webhooks/{endpoint_id}/rotate",
        f"/developers/webhooks/{endpoint_id}/delete",
        f"/developers/events/{event_id}/redeliver",
    ]
    url = closed_endpoint_url()
    for path in posts:
        for token in (None, "20991231000000##" + "0" * 40):
            form = {"url": url, "amount": "1"}
            if token:
                form["csrf_token"] = token
            response = await signed_in.post(path, form)
            assert response.status == 403, f"{path} with token {token!r}: {response.status}"
            assert "nothing was done" in await response.text()
    # Still signed in, and nothing was made.
    assert url not in await signed_in.page("/developers/webhooks")


async def test_a_form_posted_from_another_site_is_refused(signed_in: ConsoleVisitor) -> None:
    page = await signed_in.page("/developers/webhooks")
    url = closed_endpoint_url()
    form = {"csrf_token": csrf_token(page), "url": url}
    for origin in ("https://evil.example", "null"):
        refused = await signed_in.post("/developers/webhooks", form, origin=origin)
        assert refused.status == 403
        assert "not sent from the console" in await refused.text()
    sneaky = await signed_in.client.post(
        "/developers/webhooks", data=form, headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False
    )
    assert sneaky.status == 403
    assert url not in await signed_in.page("/developers/webhooks")


async def test_the_intake_being_down_is_a_friendly_page(stack: Stack) -> None:
    async with console_visitor(f"http://127.0.0.1:{free_port()}") as visitor:
        response = await visitor.sign_in()
        page = await response.text()
        assert response.status == 503 and response.headers["Retry-After"] == "5"
        assert "Paystream cannot be reached right now" in page
        visitor.forge_session({"api_key": DEMO_KEY, "key_hint": "demo"})
        for path in ("/", "/payments", "/payments/pay_0123", "/developers/webhooks", "/developers/events"):
            response = await visitor.get(path)
            page = await response.text()
            assert response.status == 503, path
            assert "Paystream cannot be reached right now" in page and "Traceback" not in page
        ready = await visitor.get("/readyz")
        assert ready.status == 503


async def test_a_key_revoked_since_sign_in_ends_the_session(visitor: ConsoleVisitor) -> None:
    visitor.forge_session({"api_key": "sk_test_revoked", "key_hint": "oked"})
    response = await visitor.get("/payments")
    assert response.status == 303 and response.headers["Location"].startswith("/sign-in?next=")
    assert (await visitor.get("/")).status == 303


async def test_payments_are_found_by_reference_or_email_filtered_and_paged(
    signed_in: ConsoleVisitor, intake: IntakeClient
) -> None:
    customer = f"grace.{secrets.token_hex(4)}@example.com"
    made = [await new_payment(intake, customer_email=customer, amount=100 + n) for n in range(22)]
    first = await signed_in.page("/payments?" + urllib_query(q=customer.upper()))
    ids = re.findall(r'href="/payments/(pay_[0-9a-f]+)"', first)
    newest = [p["id"] for p in reversed(made)]
    assert ids == newest[:20]  # newest first, a page of 20
    older = re.search(r'href="(/payments\?[^"]*starting_after=[^"]+)"', first)
    assert older
    second = await signed_in.page(html.unescape(older.group(1)))
    assert re.findall(r'href="/payments/(pay_[0-9a-f]+)"', second) == newest[20:]
    assert "← Newer" in second

    by_reference = await signed_in.page("/payments?" + urllib_query(q=made[3]["reference"]))
    assert re.findall(r'href="/payments/(pay_[0-9a-f]+)"', by_reference) == [made[3]["id"]]
    assert "1.03 USD" in by_reference
    none_failed = await signed_in.page("/payments?" + urllib_query(q=customer, status="FAILED"))
    assert "No payments match." in none_failed
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    assert "No payments match." in await signed_in.page("/payments?" + urllib_query(q=customer, **{"from": tomorrow}))

    bad = await signed_in.get("/payments?from=31/12/2026")
    assert bad.status == 422 and "Enter a date such as" in await bad.text()


async def test_an_htmx_filter_gets_only_the_results(signed_in: ConsoleVisitor, intake: IntakeClient) -> None:
    payment = await new_payment(intake)
    response = await signed_in.get(
        "/payments?" + urllib_query(q=payment["reference"]),
        headers={"HX-Request": "true", "HX-Target": "payments-results"},
    )
    fragment = await response.text()
    assert response.status == 200
    assert fragment.lstrip().startswith('<section id="payments-results"') and "<html" not in fragment
    assert payment["id"] in fragment


async def test_the_payment_page_shows_every_field_and_its_history(
    signed_in: ConsoleVisitor, intake: IntakeClient
) -> None:
    payment = await new_payment(intake, amount=1999, currency="KWD", description="Three lamps", metadata={"k": "v"})
    page = await signed_in.page(f"/payments/{payment['id']}")
    for shown in (payment["id"], "1.999 KWD", "Three lamps", payment["return_url"], payment["reference"]):
        assert escaped(shown) in page
    assert f'<time datetime="{payment["created_at"][:19]}Z">' in page
    assert "payment.created" in page or "PENDING" in page
    assert "Only a SUCCEEDED payment can be refunded." in page or "Refunds are not available" in page
    missing = await signed_in.get("/payments/pay_doesnotexist")
    assert missing.status == 404 and "There is nothing here" in await missing.text()
    assert (await signed_in.get("/payments/..%2F..%2Fv1%2Fevents")).status == 404


async def test_amounts_follow_the_currency_exponent(signed_in: ConsoleVisitor, intake: IntakeClient) -> None:
    for currency, shown in (("JPY", "1,999 JPY"), ("USD", "19.99 USD"), ("KWD", "1.999 KWD")):
        payment = await new_payment(intake, amount=1999, currency=currency)
        assert shown in await signed_in.page(f"/payments/{payment['id']}")


async def test_the_overview_counts_todays_payments_by_status(signed_in: ConsoleVisitor, intake: IntakeClient) -> None:
    await new_payment(intake, amount=500, currency="JPY")
    page = await signed_in.page("/")
    assert '<svg class="chart"' in page and 'role="img"' in page
    pending = re.search(
        r'status-pending">PENDING</span></a></th>\s*<td data-label="Count" class="num">(\d+)</td>', page
    )
    assert pending and int(pending.group(1)) >= 1
    assert "JPY" in page


async def test_a_webhook_endpoint_is_added_with_its_secret_shown_once_rotated_and_deleted(
    signed_in: ConsoleVisitor, http: aiohttp.ClientSession
) -> None:
    url = closed_endpoint_url()
    added = await signed_in.post(
        "/developers/webhooks",
        {"url": url, "events": ["payment.succeeded", "payment.failed"]},
        from_page="/developers/webhooks",
    )
    page = await added.text()
    assert added.status == 201 and added.headers["Cache-Control"] == "no-store"
    secret = re.search(r'value="(whsec_[^"]+)"', page)
    assert secret and "shown only this once" in page
    listing = await signed_in.page("/developers/webhooks")
    assert url in listing and secret.group(1) not in listing and "whsec_" not in listing
    endpoint_id = re.search(r"<code>(we_[0-9a-f]+)</code>", listing)
    assert endpoint_id

    rotated = await signed_in.post(
        f"/developers/webhooks/{endpoint_id.group(1)}/rotate", {"csrf_token": csrf_token(listing)}
    )
    new_secret = re.search(r'value="(whsec_[^"]+)"', await rotated.text())
    assert rotated.status == 200 and new_secret and new_secret.group(1) != secret.group(1)

    deleted = await signed_in.post(
        f"/developers/webhooks/{endpoint_id.group(1)}/delete", {"csrf_token": csrf_token(listing)}
    )
    assert (deleted.status, deleted.headers["Location"]) == (303, "/developers/webhooks?done=deleted")
    assert url not in await signed_in.page("/developers/webhooks")

    private = await signed_in.post("/developers/webhooks", {"url": "ftp://x"}, from_page="/developers/webhooks")
    assert private.status == 422 and 'aria-invalid="true"' in await private.text()


async def test_an_event_shows_its_deliveries_and_is_redelivered(
    signed_in: ConsoleVisitor, intake: IntakeClient
) -> None:
    added = await signed_in.post(
        "/developers/webhooks", {"url": closed_endpoint_url()}, from_page="/developers/webhooks"
    )
    endpoint_id = re.search(r"<code>(we_[0-9a-f]+)</code>", await added.text())
    assert added.status == 201 and endpoint_id
    payment = await new_payment(intake)

    async def event_listed() -> str | None:
        page = await signed_in.page("/developers/events?" + urllib_query(payment_id=payment["id"]))
        found = re.search(r'href="/developers/events/(evt_[0-9a-f]+)"', page)
        return found.group(1) if found else None

    event_id = await eventually(event_listed, timeout=30, what="the payment.created event")
    page = await signed_in.page(f"/developers/events/{event_id}")
    assert "payment.created" in page and "Redeliver" in page
    redelivered = await signed_in.post(f"/developers/events/{event_id}/redeliver", {"csrf_token": csrf_token(page)})
    assert redelivered.status == 303
    assert "Redelivery queued" in await signed_in.page(redelivered.headers["Location"])
    listing = await signed_in.page("/developers/webhooks")
    await signed_in.post(f"/developers/webhooks/{endpoint_id.group(1)}/delete", {"csrf_token": csrf_token(listing)})


async def paid_payment(intake: IntakeClient, http: aiohttp.ClientSession, **fields: object) -> dict:
    """A payment the customer paid with 4242… on the sandbox's hosted page (headless), once SUCCEEDED."""
    status, payment, _ = await intake.create(payment_body(**fields), wait=5)
    assert status == 201 and payment["checkout_url"], payment
    await simulate_card(http, payment["checkout_url"], "4242424242424242")

    async def succeeded() -> dict | None:
        async with http.get(f"{intake.base_url}/v1/payments/{payment['id']}", headers=intake.headers()) as r:
            current = await r.json()
            return current if current["status"] == "SUCCEEDED" else None

    return await eventually(succeeded, timeout=30, what="the payment SUCCEEDED")


async def test_part_of_a_payment_is_refunded_once_and_more_than_is_left_is_refused_beside_the_field(
    signed_in: ConsoleVisitor, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    payment = await paid_payment(intake, http, amount=1999, currency="USD")
    path = f"/payments/{payment['id']}"
    page = await signed_in.page(path)
    assert 'id="refundable">19.99 USD<' in page
    key = re.search(r'name="idempotency_key" value="(console_[0-9a-f]+)"', page)
    assert key
    form = {"csrf_token": csrf_token(page), "idempotency_key": key.group(1), "amount": "5", "reason": "duplicate"}
    for _ in range(2):  # a double click: the same form twice is one refund
        refunded = await signed_in.post(f"{path}/refunds", form)
        assert (refunded.status, refunded.headers["Location"]) == (303, f"{path}?done=refund#main")
    after = await signed_in.page(f"{path}?done=refund")
    assert "Refund requested." in after
    assert len(set(re.findall(r"<code>(re_[0-9A-Za-z]+)</code>", after))) == 1
    assert "5.00 USD" in after and 'id="refundable">14.99 USD<' in after

    fresh = await signed_in.page(path)
    too_much = {
        "csrf_token": csrf_token(fresh),
        "idempotency_key": re.search(r'name="idempotency_key" value="(console_[0-9a-f]+)"', fresh).group(1),  # type: ignore[union-attr]
        "amount": "15.00",
    }
    refused = await signed_in.post(f"{path}/refunds", too_much)
    text = await refused.text()
    assert refused.status == 422
    beside = re.search(r'<p class="field-error" id="amount-error">([^<]+)</p>', text)
    assert beside and "left to" in beside.group(1), text[-3000:]
    assert 'id="amount" name="amount"' in text and 'aria-invalid="true" aria-describedby="amount-error"' in text

    decimals = await signed_in.post(f"{path}/refunds", {**too_much, "amount": "1.234"})
    assert decimals.status == 422 and "2 decimal places at most" in await decimals.text()

    async def settled() -> str | None:
        shown = await signed_in.page(path)
        return shown if 'status-succeeded">succeeded' in shown else None

    final = await eventually(settled, timeout=30, what="the refund succeeded")
    assert "refund <code>re_" in final  # the history shows the refund's events


async def test_an_authorized_payment_is_captured_in_part_or_voided_from_its_page(
    signed_in: ConsoleVisitor, intake: IntakeClient, http: aiohttp.ClientSession
) -> None:
    held = []
    for _ in range(2):
        status, payment, _ = await intake.create(payment_body(amount=1999, capture_method="manual"), wait=5)
        assert status == 201 and payment["checkout_url"], payment
        await simulate_card(http, payment["checkout_url"], "4242424242424242")
        held.append(payment["id"])

    async def shown(path: str, status: str) -> str | None:
        page = await signed_in.page(path)
        return page if f'status-{status.lower()}">{status}</span></h1>' in page else None

    capture_path, void_path = (f"/payments/{payment_id}" for payment_id in held)
    page = await eventually(lambda: shown(capture_path, "AUTHORIZED"), timeout=30, what="the payment AUTHORIZED")
    assert "Capture or void" in page and ">Capture</button>" in page and ">Void</button>" in page
    key = re.search(r'name="idempotency_key" value="(console_[0-9a-f]+)"', page.split('id="capture-title"')[1])
    assert key
    form = {"csrf_token": csrf_token(page), "idempotency_key": key.group(1)}
    too_much = await signed_in.post(f"{capture_path}/capture", {**form, "amount_to_capture": "20.00"})
    text = await too_much.text()
    assert too_much.status == 422 and 'id="capture-error"' in text and "captured" in text
    captured = await signed_in.post(f"{capture_path}/capture", {**form, "amount_to_capture": "15"})
    assert (captured.status, captured.headers["Location"]) == (303, f"{capture_path}?done=capture#main")
    done = await eventually(lambda: shown(capture_path, "SUCCEEDED"), timeout=30, what="the capture")
    assert "15.00 USD" in done  # captured, and what a refund may give back

    page = await eventually(lambda: shown(void_path, "AUTHORIZED"), timeout=30, what="the second hold")
    voided = await signed_in.post(f"{void_path}/void", {"csrf_token": csrf_token(page)})
    assert voided.status == 303
    await eventually(lambda: shown(void_path, "CANCELED"), timeout=30, what="the void")


async def test_the_session_cookie_is_sealed_httponly_and_samesite_and_pages_refuse_framing(
    visitor: ConsoleVisitor, stack: Stack
) -> None:
    response = await visitor.sign_in()
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("paystream_console=gAAAAA")  # a Fernet token: encrypted and signed
    assert DEMO_KEY not in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    for path in ("/", "/sign-in", "/payments", "/static/console.css", "/no-such-page"):
        page = await visitor.get(path)
        policy = page.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["X-Frame-Options"] == "DENY"
    async with console_visitor(stack.url("intake_api"), console_public_url="https://console.shop.example") as secure:
        signed = await secure.client.get("/sign-in")
        assert "Secure" in signed.headers["Set-Cookie"]
