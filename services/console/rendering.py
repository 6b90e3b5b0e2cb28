"""Pages from Jinja templates (autoescaped: whatever a customer typed is shown as text), and the error page."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session

from services.console.forms import ActionForm, build_form
from services.console.guard import API_KEY
from services.console.money import format_money, major_units
from shared.web import OPERATIONAL_PATHS, Problem, problem_page

KEY_HINT = "key_hint"  # the session's field holding the key's last characters, shown in the header


def as_datetime(value: object) -> datetime | None:
    """The API's times (ISO 8601 text, or Unix seconds for events) as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_utc(value: object) -> str:
    """`<time datetime=...>`'s value: UTC, to the second; the browser's script shows it in its own time zone."""
    moment = as_datetime(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def utc_text(value: object) -> str:
    """What a browser without the script shows: the same moment in UTC, said so."""
    moment = as_datetime(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _money(amount: object, currency: object) -> str:
    if not isinstance(amount, int) or not isinstance(currency, str):
        return "—"
    return format_money(amount, currency)


def _major(amount: object, currency: object) -> str:
    if not isinstance(amount, int) or not isinstance(currency, str):
        return ""
    return major_units(amount, currency)


def pretty_json(value: object) -> str:
    """A payload as indented JSON text (escaped like any other text when the page is rendered)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


_ENVIRONMENT = {
    "autoescape": True,
    "undefined": jinja2.StrictUndefined,
    "trim_blocks": True,
    "lstrip_blocks": True,
}
_FILTERS = {"money": _money, "major": _major, "iso_utc": iso_utc, "utc_text": utc_text, "pretty_json": pretty_json}


def _loader() -> jinja2.BaseLoader:
    return jinja2.PackageLoader("services.console", "templates")


def setup_templates(app: web.Application) -> jinja2.Environment:
    """The application's Jinja environment: the console's templates, autoescaped, with its filters."""
    env = aiohttp_jinja2.setup(app, loader=_loader(), **_ENVIRONMENT)  # type: ignore[arg-type]
    env.filters.update(_FILTERS)
    return env


@functools.cache
def _error_environment() -> jinja2.Environment:
    """Templates for the error page of a request that never reached the application (its HTTP was refused)."""
    env = jinja2.Environment(loader=_loader(), **_ENVIRONMENT)  # type: ignore[arg-type]
    env.filters.update(_FILTERS)
    return env


async def render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """A page of the signed-in console: the template with the header's sign-out form and key hint."""
    session = await get_session(request)
    signed_in = isinstance(session.get(API_KEY), str)
    common = {
        "signed_in": signed_in,
        "key_hint": session.get(KEY_HINT, ""),
        "sign_out_form": await build_form(request, ActionForm) if signed_in else None,
        "current_path": request.path,
    }
    response = aiohttp_jinja2.render_template(template, request, {**common, **context}, status=status)
    response.headers["Vary"] = "HX-Request, HX-Target"
    return response


def error_page(request: web.BaseRequest, problem: Problem) -> web.StreamResponse:
    """A person's browser gets a page for every error, never a stack trace (operational routes excepted)."""
    if request.path in OPERATIONAL_PATHS:
        return problem_page(request, problem)
    headers = {k: v for k, v in problem.headers.items() if k.lower() in ("allow", "retry-after")}
    if problem.status >= 500:
        title, message = problem_title(problem)
    else:
        title, message = problem.title, problem.detail
    env = _error_environment()
    html = env.get_template("error.html").render(
        title=title, message=message, status=problem.status, signed_in=False, key_hint="", current_path=request.path
    )
    return web.Response(text=html, status=problem.status, content_type="text/html", charset="utf-8", headers=headers)


def problem_title(problem: Problem) -> tuple[str, str]:
    """The title and sentence of a 5xx page: the intake being unreachable said as such."""
    if problem.slug == "intake-unavailable":
        return "Paystream cannot be reached right now", problem.detail
    return "Something went wrong", "The console could not complete your request. Please try again."
