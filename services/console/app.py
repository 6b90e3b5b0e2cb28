"""The console's aiohttp application: wiring only; the pages live in signin, overview, payments and developers."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp_session import session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet, MultiFernet

from services.console import developers, guard, overview, payments, signin
from services.console.forms import CSRF_SECRET, CSRF_TIME_LIMIT
from services.console.intake import intake_alive
from services.console.merchant import HTTP, INTAKE_URL, intake_errors
from services.console.rendering import error_page, setup_templates
from services.console.settings import ConsoleSettings
from shared.logs import get_logger
from shared.web import ERROR_PAGE, READINESS_CHECKS, create_base_app

log = get_logger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 16 * 1024
SESSION_COOKIE = "paystream_console"


class RotatingCookieStorage(EncryptedCookieStorage):
    """aiohttp-session's encrypted cookie, sealed with the first CONSOLE_SESSION_KEY and opened with any of them,
    so the key can be rotated without signing everyone out."""

    def __init__(self, keys: list[str], **cookie: object) -> None:
        super().__init__(keys[0], **cookie)  # type: ignore[arg-type]
        self._fernet = MultiFernet([Fernet(key) for key in keys])  # type: ignore[assignment]


def create_app(settings: ConsoleSettings) -> web.Application:
    """The console, reaching the intake API at `settings.intake_base_url` with each signed-in merchant's key."""
    app = create_base_app(client_max_size=MAX_FORM_BYTES)
    app[ERROR_PAGE] = error_page
    app[INTAKE_URL] = settings.intake_base_url
    keys = [key.get_secret_value() for key in settings.console_session_key]
    max_age = settings.console_session_max_age_seconds
    storage = RotatingCookieStorage(
        keys,
        cookie_name=SESSION_COOKIE,
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=settings.console_base_url.startswith("https://"),
        path="/",
    )
    # The CSRF tokens' own key, derived from the session key so one setting is enough.
    app[CSRF_SECRET] = hmac.new(keys[0].encode(), b"paystream console csrf", hashlib.sha256).digest()
    app[CSRF_TIME_LIMIT] = timedelta(seconds=max_age)
    app.middlewares.extend([session_middleware(storage), guard.same_origin_only, guard.signed_in_only, intake_errors])
    app.on_response_prepare.append(guard.stamp_security_headers)
    setup_templates(app)
    app.cleanup_ctx.append(_http_client)

    async def intake_answers() -> bool:
        return await intake_alive(app[HTTP], app[INTAKE_URL])

    app[READINESS_CHECKS].append(intake_answers)
    add_routes(app.router)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        log.info("console ready", intake=app[INTAKE_URL])
        yield


def add_routes(router: web.UrlDispatcher) -> None:
    """The console's pages and the forms they post; static files under /static."""
    router.add_get("/sign-in", signin.show_sign_in)
    router.add_post("/sign-in", signin.sign_in)
    router.add_post("/sign-out", signin.sign_out)
    router.add_get("/", overview.show_overview)
    router.add_get("/payments", payments.list_payments)
    router.add_get("/payments/{payment_id}", payments.show_payment)
    router.add_post("/payments/{payment_id}/refunds", payments.refund)
    router.add_post("/payments/{payment_id}/capture", payments.capture)
    router.add_post("/payments/{payment_id}/void", payments.void)
    router.add_get("/developers/webhooks", developers.show_endpoints)
    router.add_post("/developers/webhooks", developers.add_endpoint)
    router.add_post("/developers/webhooks/{endpoint_id}/rotate", developers.rotate_secret)
    router.add_post("/developers/webhooks/{endpoint_id}/delete", developers.delete_endpoint)
    router.add_get("/developers/events", developers.list_events)
    router.add_get("/developers/events/{event_id}", developers.show_event)
    router.add_post("/developers/events/{event_id}/redeliver", developers.redeliver)
    router.add_static("/static", STATIC, append_version=False)
