"""A local fake of the part of Stripe's API the stripe adapter uses: Refunds, Checkout Sessions and their webhooks.

It speaks Stripe's wire format (Bearer auth, form-encoded bodies in bracket notation, JSON answers,
errors as {"error": {"type", "message", ...}}, Idempotency-Key replay, 409 for a key still in flight,
`Stripe-Should-Retry`, `expand[]`) and is written independently of the adapter, so a test that passes proves the
adapter against the format, not against itself. Every object it serves (sessions, PaymentIntents, events) is
built on Stripe's published example of that object (tests/fakes/stripe_shapes.py): it can set no field Stripe
does not have. Webhooks are signed by the official SDK's `stripe.WebhookSignature`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import stripe
from aiohttp import web

from tests.fakes.stripe_shapes import nested, sdk_fields, shaped

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
# Stripe's limits on metadata.
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500


class StripeRequestError(Exception):
    """Answered as Stripe does: an HTTP status and {"error": {...}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        should_retry: bool | None = None,
        **extra: str,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": type_, "message": message, **extra}}
        self.headers = {} if should_retry is None else {"Stripe-Should-Retry": "true" if should_retry else "false"}


# A form-encoded body as its (name, value) pairs, in order.
Form = list[tuple[str, str]]


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields in bracket notation (`a[b][0][c]=v`, `a[]=v`) as nested dicts and lists."""
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = _KEY.match(raw_key)
        if match is None:
            raise StripeRequestError(400, f"Invalid parameter name: {raw_key}", param=raw_key)
        path = [match.group(1), *_SEGMENT.findall(match.group(2))]
        node = root
        for depth, segment in enumerate(path):
            if segment == "":
                segment = str(len(node))
            last = depth == len(path) - 1
            if last:
                node[segment] = value
            else:
                child = node.setdefault(segment, {})
                if not isinstance(child, dict):
                    raise StripeRequestError(400, f"Invalid parameter: {raw_key}", param=raw_key)
                node = child
    return _lists(root)


def _lists(node: Any) -> Any:
    """Dicts keyed 0..n-1 become lists, as Stripe reads `line_items[0]`."""
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(i)] for i in indices]
    return converted


def _integer(value: Any, param: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise StripeRequestError(400, f"Invalid integer: {value}", param=param)
    return int(value)


async def _form(request: web.Request) -> list[tuple[str, str]]:
    """The raw form fields in order (aiohttp keeps the body, so it can be read again)."""
    return parse_qsl(await request.text(), keep_blank_values=True) if request.body_exists else []


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: list[tuple[str, str]]
    query: list[tuple[str, str]] = field(default_factory=list)

    @property
    def params(self) -> dict[str, Any]:
        return decode_form(self.form)


@dataclass
class StripeFake:
    """State and behaviour of the fake; `app()` serves it over HTTP."""

    api_key: str = "sk_test_fake"
    webhook_secret: str = "whsec_test_fake"
    checkout_base: str = "https://checkout.stripe.test"
    clock: Callable[[], float] = time.time
    # The API version events are rendered in: the webhook endpoint's, which must be the adapter's pinned one.
    api_version: str = stripe.api_version
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    # Idempotency keys whose first request Stripe is still working on: a request reusing one answers 409.
    in_flight: set[str] = field(default_factory=set)
    _idempotent: dict[str, tuple[list[tuple[str, str]], int, dict[str, Any]]] = field(default_factory=dict)
    _failures: list[tuple[int, bool | None]] = field(default_factory=list)
    # While set, every request waits for it before being answered: a Stripe that does not answer in time.
    _stalled: asyncio.Event | None = None

    # --- controls for tests -------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500, *, should_retry: bool | None = None) -> None:
        """The next `count` requests answer `status` unprocessed (leaving no idempotent result), with a
        `Stripe-Should-Retry` header when `should_retry` is given."""
        self._failures.extend([(status, should_retry)] * count)

    def stall(self) -> None:
        """Requests from now on get no answer until `heal()`."""
        self._stalled = asyncio.Event()

    def heal(self) -> None:
        """Answer normally again: pending failures are dropped, stalled requests go on."""
        self._failures.clear()
        if self._stalled is not None:
            self._stalled.set()
            self._stalled = None

    def complete_session(self, session_id: str, payment_status: str = "paid") -> dict[str, Any]:
        """The customer finished Checkout: paid at once, or `unpaid` while an async method settles."""
        session = self.sessions[session_id]
        intent_id = f"pi_test_{secrets.token_hex(12)}"
        self.payment_intents[intent_id] = shaped(
            "payment_intent",
            id=intent_id,
            capture_method=session["_capture_method"],
            cancellation_reason=None,
            amount=session["amount_total"],
            amount_capturable=0,
            amount_received=session["amount_total"] if payment_status == "paid" else 0,
            currency=session["currency"],
            status="succeeded" if payment_status == "paid" else "processing",
            metadata=dict(session["_payment_intent_metadata"]),
            last_payment_error=None,
            canceled_at=None,
            created=int(self.clock()),
            client_secret=f"{intent_id}_secret_{secrets.token_hex(8)}",
            next_action=None,
            processing=None,
            transfer_data=None,
            latest_charge=f"ch_test_{secrets.token_hex(12)}",
        )
        session["status"] = "complete"
        session["payment_status"] = payment_status
        session["payment_intent"] = intent_id
        session["url"] = None
        return session

    def authorize_session(self, session_id: str) -> dict[str, Any]:
        """The customer finished Checkout of a manual-capture session: the card is authorized, the money held
        (PaymentIntent `requires_capture`); the session is complete and, until a capture, `unpaid`."""
        session = self.complete_session(session_id, payment_status="unpaid")
        intent = self.payment_intents[session["payment_intent"]]
        intent.update(status="requires_capture", amount_capturable=session["amount_total"], amount_received=0)
        return session

    def intent_webhook(self, session_id: str, event_type: str) -> tuple[bytes, dict[str, str]]:
        """A `payment_intent.*` event about the session's PaymentIntent as it is now, signed."""
        intent_id = self.sessions[session_id]["payment_intent"]
        return self.event(event_type, copy.deepcopy(self.payment_intents[intent_id]))

    def settle_async_payment(self, session_id: str, *, succeeded: bool) -> dict[str, Any]:
        """The asynchronous method settled: the session is paid, or stays `unpaid` (Stripe has no failed value
        for payment_status) while its PaymentIntent falls back to requires_payment_method with the error."""
        session = self.sessions[session_id]
        intent = self.payment_intents[session["payment_intent"]]
        if succeeded:
            session["payment_status"] = "paid"
            intent.update(status="succeeded", amount_received=intent["amount"])
        else:
            intent.update(
                status="requires_payment_method",
                last_payment_error=nested(
                    stripe.PaymentIntent.LastPaymentError,
                    type="card_error",
                    code="card_declined",
                    decline_code="insufficient_funds",
                    message="Your card has insufficient funds.",
                ),
            )
        return session

    def expire_session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session["status"] = "expired"
        session["url"] = None
        return session

    def foreign_session(self, **fields: Any) -> dict[str, Any]:
        """A session someone else opened on the account (a Payment Link): no client_reference_id, no metadata."""
        session = shaped("checkout.session", id=f"cs_test_{secrets.token_hex(24)}", **fields)
        self.sessions[session["id"]] = {**session, "_payment_intent_metadata": {}, "_capture_method": "automatic"}
        return self.sessions[session["id"]]

    def settle_refund(
        self, refund_id: str, *, succeeded: bool = True, failure_reason: str | None = None
    ) -> dict[str, Any]:
        """The money went back (or could not: `failure_reason`, e.g. `expired_or_canceled_card`)."""
        refund = self.refunds[refund_id]
        refund["status"] = "succeeded" if succeeded else "failed"
        if not succeeded:
            # An optional field Stripe's example leaves out; the SDK's Refund has it (checked here as shaped() would).
            assert "failure_reason" in sdk_fields(stripe.Refund)
            refund["failure_reason"] = failure_reason or "unknown"
        return copy.deepcopy(refund)

    def served(self, session: dict[str, Any], *, expand: Sequence[str] = ()) -> dict[str, Any]:
        """A session as Stripe serves it: without the fake's own bookkeeping, its PaymentIntent expanded if asked."""
        shown = {key: copy.deepcopy(value) for key, value in session.items() if not key.startswith("_")}
        if "payment_intent" in expand and shown["payment_intent"] is not None:
            shown["payment_intent"] = copy.deepcopy(self.payment_intents[shown["payment_intent"]])
        return shown

    def webhook(
        self,
        session_id: str,
        event_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        event_id: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A Stripe event about the session as it is now, and the headers that sign it correctly."""
        return self.event(
            event_type, self.served(self.sessions[session_id]), timestamp=timestamp, secret=secret, event_id=event_id
        )

    def event(
        self,
        event_type: str,
        obj: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        event_id: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """An event of `event_type` about `obj`, as Stripe sends it to a webhook endpoint, and its signed headers."""
        created = int(self.clock()) if timestamp is None else timestamp
        event = shaped(
            "event",
            id=event_id or f"evt_test_{secrets.token_hex(12)}",
            api_version=self.api_version,
            created=created,
            livemode=False,
            pending_webhooks=1,
            request={"id": f"req_{secrets.token_hex(7)}", "idempotency_key": None},
            type=event_type,
            data={"object": obj},
        )
        body = json.dumps(event).encode()
        return body, {"Stripe-Signature": self.signature(body, timestamp=created, secret=secret)}

    def signature(self, body: bytes, *, timestamp: int, secret: str | None = None) -> str:
        header = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret or self.webhook_secret, timestamp=timestamp
        )
        # Stripe's test mode adds a v0 entry; receivers must ignore schemes they do not know.
        return f"{header},v0={secrets.token_hex(32)}"

    # --- the HTTP side ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/checkout/sessions", self._create)
        app.router.add_get("/v1/checkout/sessions/{id}", self._retrieve)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self._expire)
        app.router.add_post("/v1/payment_intents/{id}/capture", self._capture)
        app.router.add_post("/v1/refunds", self._create_refund)
        app.router.add_get("/v1/refunds/{id}", self._retrieve_refund)
        app.router.add_post("/v1/payment_intents/{id}/cancel", self._cancel_intent)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        form = await _form(request)
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), form, list(request.query.items()))
        )
        if self._stalled is not None:
            await self._stalled.wait()
        try:
            if self._failures:
                status, should_retry = self._failures.pop(0)
                raise StripeRequestError(
                    status,
                    "An error occurred with our connection to Stripe.",
                    type_="api_error",
                    should_retry=should_retry,
                )
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                raise StripeRequestError(401, "Invalid API Key provided.")
            return await handler(request)
        except StripeRequestError as exc:
            return web.json_response(exc.body, status=exc.status, headers=exc.headers)
        except web.HTTPNotFound:
            return web.json_response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"Unrecognized request URL ({request.path}).",
                    }
                },
                status=404,
            )

    def _session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise StripeRequestError(
                404, f"No such checkout.session: '{session_id}'", code="resource_missing", param="session"
            )
        return session

    def _replayed(self, key: str | None, form: list[tuple[str, str]]) -> web.Response | None:
        """The answer first given under this Idempotency-Key (None for a new key); 409 while it is in flight, 400
        for other parameters."""
        if key is not None and key in self.in_flight:
            # Nothing is stored for such a request, so the retry it asks for is answered afresh.
            raise StripeRequestError(
                409,
                "There is currently another in-progress request using this Idempotent Key (that probably means "
                "you submitted twice, and the other request is still going through). Please try again later.",
                type_="idempotency_error",
            )
        if key is not None and key in self._idempotent:
            first_form, status, body = self._idempotent[key]
            if sorted(first_form) != sorted(form):
                raise StripeRequestError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    type_="idempotency_error",
                )
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        return None

    async def _once(self, request: web.Request, answer: Callable[[web.Request, Form], dict[str, Any]]) -> web.Response:
        """A POST under Stripe's idempotency: a key seen before gets its first answer again (`_replayed`), a new one
        the body `answer` makes of the form, kept for the key; a refusal `answer` raises is not kept."""
        form = await _form(request)
        key = request.headers.get("Idempotency-Key")
        replayed = self._replayed(key, form)
        if replayed is not None:
            return replayed
        body = answer(request, form)
        if key is not None:
            self._idempotent[key] = (form, 200, copy.deepcopy(body))
        return web.json_response(body)

    async def _create(self, request: web.Request) -> web.Response:
        return await self._once(request, self._create_session)

    def _create_session(self, request: web.Request, form: Form) -> dict[str, Any]:
        session = self._new_session(decode_form(form))
        self.sessions[session["id"]] = session
        return self.served(session)

    async def _create_refund(self, request: web.Request) -> web.Response:
        return await self._once(request, lambda _, form: self._new_refund(decode_form(form)))

    def _new_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id = params.get("payment_intent")
        if not intent_id:
            raise StripeRequestError(400, "One of `charge` or `payment_intent` is required.", param="payment_intent")
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            raise StripeRequestError(
                404, f"No such payment_intent: '{intent_id}'", code="resource_missing", param="payment_intent"
            )
        if intent["status"] != "succeeded":
            raise StripeRequestError(400, f"PaymentIntent {intent_id} has no successful charge to refund.")
        taken = sum(
            r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent_id and r["status"] != "failed"
        )
        left = intent["amount_received"] - taken
        amount = _integer(params["amount"], "amount") if "amount" in params else left
        if left <= 0:
            raise StripeRequestError(
                400, f"Charge for {intent_id} has already been refunded.", code="charge_already_refunded"
            )
        if not 0 < amount <= left:
            raise StripeRequestError(
                400, f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left}).", param="amount"
            )
        reason = params.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise StripeRequestError(400, f"Invalid reason: {reason}.", param="reason")
        refund_id = f"re_test_{secrets.token_hex(12)}"
        refund = shaped(
            "refund",
            id=refund_id,
            amount=amount,
            currency=intent["currency"],
            payment_intent=intent_id,
            charge=f"ch_test_{secrets.token_hex(12)}",
            metadata=_metadata(params.get("metadata"), "metadata"),
            reason=reason,
            status="pending",
            created=int(self.clock()),
        )
        self.refunds[refund_id] = refund
        return copy.deepcopy(refund)

    async def _retrieve_refund(self, request: web.Request) -> web.Response:
        refund = self.refunds.get(request.match_info["id"])
        if refund is None:
            raise StripeRequestError(
                404, f"No such refund: '{request.match_info['id']}'", code="resource_missing", param="id"
            )
        return web.json_response(copy.deepcopy(refund))

    def _new_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise StripeRequestError(400, "Missing required param: mode.", param="mode")
        if not params.get("success_url"):
            raise StripeRequestError(400, "Missing required param: success_url.", param="success_url")
        items = params.get("line_items")
        if not isinstance(items, list) or not items:
            raise StripeRequestError(400, "Missing required param: line_items.", param="line_items")
        total = 0
        currencies: set[str] = set()
        for index, item in enumerate(items):
            prefix = f"line_items[{index}]"
            price = item.get("price_data") if isinstance(item, dict) else None
            if not isinstance(price, dict) or not isinstance(price.get("product_data"), dict):
                raise StripeRequestError(400, f"Missing required param: {prefix}[price_data].", param=prefix)
            if not price["product_data"].get("name"):
                raise StripeRequestError(400, "Missing required param: product_data[name].", param=prefix)
            currency = price.get("currency", "")
            if not re.fullmatch(r"[a-z]{3}", currency):
                raise StripeRequestError(400, f"Invalid currency: {currency}.", param=f"{prefix}[price_data][currency]")
            currencies.add(currency)
            unit_amount = _integer(price.get("unit_amount"), f"{prefix}[price_data][unit_amount]")
            total += unit_amount * _integer(item.get("quantity"), f"{prefix}[quantity]")
        if len(currencies) != 1:
            raise StripeRequestError(400, "All line items must share one currency.", param="line_items")
        now = int(self.clock())
        expires_at = now + MAX_EXPIRY_SECONDS
        if "expires_at" in params:
            expires_at = _integer(params["expires_at"], "expires_at")
            if not now + MIN_EXPIRY_SECONDS <= expires_at <= now + MAX_EXPIRY_SECONDS:
                raise StripeRequestError(
                    400,
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours "
                    "from Checkout Session creation.",
                    param="expires_at",
                )
        metadata = _metadata(params.get("metadata"), "metadata")
        intent_data = params.get("payment_intent_data") or {}
        intent_metadata = _metadata(intent_data.get("metadata"), "payment_intent_data[metadata]")
        session_id = f"cs_test_{secrets.token_hex(24)}"
        session = shaped(
            "checkout.session",
            id=session_id,
            mode="payment",
            url=f"{self.checkout_base}/c/pay/{session_id}",
            status="open",
            payment_status="unpaid",
            amount_subtotal=total,
            amount_total=total,
            currency=currencies.pop(),
            client_reference_id=params.get("client_reference_id"),
            customer_email=params.get("customer_email"),
            customer_details=None,
            metadata=metadata,
            # Since 2022-08-01 a session in payment mode has no PaymentIntent until the customer confirms.
            payment_intent=None,
            created=now,
            expires_at=expires_at,
            success_url=params["success_url"],
            cancel_url=params.get("cancel_url"),
            livemode=False,
            shipping_address_collection=None,
            shipping_cost=None,
            currency_conversion=None,
        )
        # Kept for the PaymentIntent the customer's confirmation creates; never served.
        session["_payment_intent_metadata"] = intent_metadata
        capture_method = intent_data.get("capture_method", "automatic")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise StripeRequestError(
                400, f"Invalid payment_intent_data[capture_method]: {capture_method}", param="capture_method"
            )
        session["_capture_method"] = capture_method
        return session

    def _expand(self, request: web.Request, form: list[tuple[str, str]]) -> list[str]:
        """The `expand[]` of a request (query of a GET, body of a POST), in either bracket spelling."""
        pairs = list(request.query.items()) if request.method == "GET" else form
        wanted = [value for key, value in pairs if re.fullmatch(r"expand\[\d*\]", key)]
        for path in wanted:
            if path != "payment_intent":
                raise StripeRequestError(400, f"This property cannot be expanded ({path}).", param="expand")
        return wanted

    async def _retrieve(self, request: web.Request) -> web.Response:
        session = self._session(request.match_info["id"])
        return web.json_response(self.served(session, expand=self._expand(request, [])))

    async def _expire(self, request: web.Request) -> web.Response:
        session = self._session(request.match_info["id"])
        expand = self._expand(request, await _form(request))
        if session["status"] != "open":
            raise StripeRequestError(
                400,
                f'Only Checkout Sessions with a status in ["open"] can be expired. '
                f'This Checkout Session has a status of "{session["status"]}".',
            )
        return web.json_response(self.served(self.expire_session(session["id"]), expand=expand))

    def _payment_intent(self, intent_id: str) -> dict[str, Any]:
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            raise StripeRequestError(
                404, f"No such payment_intent: '{intent_id}'", code="resource_missing", param="intent"
            )
        return intent

    def _session_of(self, intent_id: str) -> dict[str, Any] | None:
        return next((s for s in self.sessions.values() if s.get("payment_intent") == intent_id), None)

    async def _capture(self, request: web.Request) -> web.Response:
        return await self._once(request, self._capture_intent)

    def _capture_intent(self, request: web.Request, form: Form) -> dict[str, Any]:
        """Capture a `requires_capture` PaymentIntent, all or `amount_to_capture` of it; the rest is released."""
        intent = self._payment_intent(request.match_info["id"])
        if intent["status"] != "requires_capture":
            raise StripeRequestError(
                400,
                f"This PaymentIntent could not be captured because it has a status of {intent['status']}. Only a "
                "PaymentIntent with one of the following statuses may be captured: requires_capture.",
                code="payment_intent_unexpected_state",
            )
        params = decode_form(form)
        amount = intent["amount_capturable"]
        if "amount_to_capture" in params:
            amount = _integer(params["amount_to_capture"], "amount_to_capture")
            if not 0 < amount <= intent["amount_capturable"]:
                raise StripeRequestError(
                    400, "The amount to capture cannot exceed the capturable amount.", param="amount_to_capture"
                )
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        session = self._session_of(intent["id"])
        if session is not None:
            session["payment_status"] = "paid"
        return copy.deepcopy(intent)

    async def _cancel_intent(self, request: web.Request) -> web.Response:
        return await self._once(request, self._void_intent)

    def _void_intent(self, request: web.Request, form: Form) -> dict[str, Any]:
        """Cancel a PaymentIntent (a held one: its hold is voided); a succeeded one cannot be."""
        intent = self._payment_intent(request.match_info["id"])
        if intent["status"] in ("succeeded", "canceled"):
            raise StripeRequestError(
                400,
                f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
                code="payment_intent_unexpected_state",
            )
        reason = decode_form(form).get("cancellation_reason")
        if reason not in (None, "abandoned", "duplicate", "fraudulent", "requested_by_customer"):
            raise StripeRequestError(400, f"Invalid cancellation_reason: {reason}", param="cancellation_reason")
        intent.update(status="canceled", cancellation_reason=reason, amount_capturable=0, canceled_at=int(self.clock()))
        return copy.deepcopy(intent)


def _metadata(value: Any, param: str) -> dict[str, str]:
    """Metadata as Stripe checks it: at most 50 keys, keys of at most 40 characters, values of at most 500."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StripeRequestError(400, f"Invalid object: {param}", param=param)
    if len(value) > METADATA_MAX_KEYS:
        raise StripeRequestError(400, f"Invalid {param}: at most 50 keys", param=param)
    for key, item in value.items():
        if len(key) > METADATA_MAX_KEY_LENGTH:
            raise StripeRequestError(400, f"Invalid {param}: keys can be at most 40 characters", param=param)
        if not isinstance(item, str) or len(item) > METADATA_MAX_VALUE_LENGTH:
            raise StripeRequestError(
                400, f"Invalid {param}[{key}]: values can be at most 500 characters", param=f"{param}[{key}]"
            )
    return dict(value)
