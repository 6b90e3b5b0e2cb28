"""Signing in with the merchant's API key, and out."""

from __future__ import annotations

from aiohttp import web
from aiohttp_session import get_session, new_session

from services.console.forms import ActionForm, SignInForm, build_form, csrf_failed, submitted_form
from services.console.guard import API_KEY
from services.console.intake import key_is_accepted
from services.console.merchant import HTTP, INTAKE_URL
from services.console.navigation import safe_next
from services.console.rendering import KEY_HINT, render
from shared.logs import get_logger

log = get_logger(__name__)

WRONG_KEY = "That API key is not valid. Check it and try again."


async def show_sign_in(request: web.Request) -> web.Response:
    """The sign-in form; someone already signed in goes straight on."""
    next_path = safe_next(request.query.get("next"))
    session = await get_session(request)
    if isinstance(session.get(API_KEY), str):
        return web.Response(status=303, headers={"Location": next_path})
    form = await build_form(request, SignInForm, next=next_path)
    return await _sign_in_page(request, form, signed_out="signed_out" in request.query)


async def sign_in(request: web.Request) -> web.Response:
    """Check the key with the intake API; a wrong key is said as such, and nothing more about it."""
    form = await build_form(request, SignInForm, submitted=True)
    if csrf_failed(form):
        form.csrf_token.errors = []
        return await _sign_in_page(
            request, form, message="The sign-in form had expired. Please sign in again.", status=403
        )
    if not form.validate():
        return await _sign_in_page(request, form, status=422)
    api_key = str(form.api_key.data).strip()
    if not await key_is_accepted(request.app[HTTP], request.app[INTAKE_URL], api_key):
        log.info("sign-in refused: unknown key")
        form.api_key.errors = [WRONG_KEY]
        return await _sign_in_page(request, form, status=401)
    # A new session (new cookie) at sign-in: nothing from before it, a fixed session id included, carries over.
    session = await new_session(request)
    session[API_KEY] = api_key
    session[KEY_HINT] = api_key[-4:]
    log.info("signed in")
    return web.Response(status=303, headers={"Location": safe_next(form.next.data)})


async def sign_out(request: web.Request) -> web.Response:
    """End the session (its cookie is emptied) and say so on the sign-in page."""
    await submitted_form(request, ActionForm)
    session = await get_session(request)
    session.invalidate()
    return web.Response(status=303, headers={"Location": "/sign-in?signed_out=1"})


async def _sign_in_page(
    request: web.Request, form: SignInForm, *, status: int = 200, message: str = "", signed_out: bool = False
) -> web.Response:
    form.api_key.data = ""  # a key typed is never sent back in a page
    return await render(
        request, "sign_in.html", {"form": form, "message": message, "signed_out": signed_out}, status=status
    )
