"""The console's forms (WTForms): every one carries a CSRF token bound to the session (SessionCSRF)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from aiohttp_session import get_session
from multidict import MultiDictProxy
from wtforms import Form, HiddenField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.csrf.session import SessionCSRF
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from shared.merchant_events import MERCHANT_EVENT_TYPES
from shared.web import Problem, read_form

F = TypeVar("F", bound="ConsoleForm")

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
CSRF_SECRET = web.AppKey("csrf_secret", bytes)
CSRF_TIME_LIMIT = web.AppKey("csrf_time_limit", timedelta)

REFUND_REASONS = [
    SelectChoice("", "No reason given"),
    SelectChoice("requested_by_customer", "Requested by the customer"),
    SelectChoice("duplicate", "Duplicate payment"),
    SelectChoice("fraudulent", "Fraudulent"),
]


class _SubmittedForm:
    """aiohttp's form (a MultiDict) as WTForms reads one: `getlist`, text values only (no uploads)."""

    def __init__(self, submitted: MultiDictProxy[Any]) -> None:
        self._submitted = submitted

    def __iter__(self) -> Iterator[str]:
        return iter(set(self._submitted.keys()))

    def __len__(self) -> int:
        return len(self._submitted)

    def __contains__(self, name: object) -> bool:
        return name in self._submitted

    def getlist(self, name: str) -> list[str]:
        return [value for value in self._submitted.getall(name, []) if isinstance(value, str)]


class ConsoleForm(Form):
    """A form whose CSRF token is tied to the signed-in session (or the anonymous one, for sign-in)."""

    class Meta:
        csrf = True
        csrf_class = SessionCSRF
        csrf_field_name = "csrf_token"


async def build_form(request: web.Request, form_class: type[F], *, submitted: bool = False, **data: Any) -> F:
    """The form, filled from the request's body when `submitted` (read as shared.web.read_form does)."""
    session = await get_session(request)
    meta = {
        "csrf_secret": request.app[CSRF_SECRET],
        "csrf_context": session,
        "csrf_time_limit": request.app[CSRF_TIME_LIMIT],
    }
    if submitted and request.content_type not in FORM_TYPES:
        raise Problem(415, "unsupported-media-type", "The console takes HTML forms only.")
    formdata = _SubmittedForm(await read_form(request)) if submitted else None
    return form_class(formdata=formdata, meta=meta, data=data or None)


def csrf_failed(form: ConsoleForm) -> bool:
    """The form came without a valid CSRF token (missing, forged, from another session, or too old)."""
    token = form.csrf_token
    return not token.validate(form)


def csrf_refused() -> Problem:
    """What a form without a valid CSRF token gets: 403, and nothing done."""
    return Problem(
        403,
        "csrf-token-invalid",
        "This form has expired or did not come from the console, so nothing was done. Reload the page and try again.",
    )


async def submitted_form(request: web.Request, form_class: type[F]) -> F:
    """The form the request submitted; one without a valid CSRF token is refused (403) before anything is done."""
    form = await build_form(request, form_class, submitted=True)
    if csrf_failed(form):
        raise csrf_refused()
    return form


def new_idempotency_key() -> str:
    """One key per rendered form: submitting it twice (a double click, a retry) replays one request."""
    return "console_" + secrets.token_hex(16)


class SignInForm(ConsoleForm):
    api_key = PasswordField("API key", validators=[InputRequired("Enter your API key."), Length(max=255)])
    next = HiddenField()


class ActionForm(ConsoleForm):
    """A button that acts (sign out, void, redeliver, rotate, delete): nothing but the CSRF token."""


class RefundForm(ConsoleForm):
    amount = StringField("Amount to refund", validators=[Optional(), Length(max=32)])
    reason = SelectField("Reason", choices=REFUND_REASONS, default="")
    idempotency_key = HiddenField()


class CaptureForm(ConsoleForm):
    amount_to_capture = StringField("Amount to capture", validators=[Optional(), Length(max=32)])
    idempotency_key = HiddenField()


class EndpointForm(ConsoleForm):
    url = StringField(
        "Endpoint URL", validators=[InputRequired("Enter the URL that receives the events."), Length(max=2048)]
    )
    events = SelectMultipleField(
        "Events to send (none ticked: every event)",
        choices=[SelectChoice(name) for name in MERCHANT_EVENT_TYPES],
        option_widget=CheckboxInput(),
        widget=ListWidget(prefix_label=False),
        validators=[Optional()],
    )
