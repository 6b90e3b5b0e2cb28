"""What every console answer and request goes through: security headers, the same-origin rule for anything that
acts, and sign-in for every page but the sign-in page itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp_session import get_session

from services.console.navigation import safe_next
from shared.web import OPERATIONAL_PATHS, Problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY = "api_key"  # the session's field holding the merchant's key
SIGN_IN = "/sign-in"
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({SIGN_IN, *OPERATIONAL_PATHS})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No script or style but the console's own files, no framing, forms only to the console itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


async def stamp_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer (pages, errors, static files) refuses framing and foreign scripts; pages are never cached."""
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(PUBLIC_PREFIXES):
        response.headers["Cache-Control"] = "no-store"


def _is_cross_origin(request: web.Request) -> bool:
    """A browser says where a form came from: `Origin` (every POST), else `Sec-Fetch-Site`."""
    origin = request.headers.get("Origin")
    if origin is not None:
        own = f"{request.scheme}://{request.host}"
        return origin == "null" or origin.rstrip("/").lower() != own.lower()
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


@web.middleware
async def same_origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A form posted from another site is refused before anything reads it, whatever cookie came with it."""
    if request.method not in SAFE_METHODS and _is_cross_origin(request):
        raise Problem(403, "cross-origin-request", "This form was not sent from the console; nothing was done.")
    return await handler(request)


def sign_in_location(next_path: str) -> str:
    """The sign-in page, with where to go after it (a path of the console only)."""
    return f"{SIGN_IN}?next={quote(safe_next(next_path), safe='')}"


def _where_the_user_was(request: web.Request) -> str:
    """The page to come back to after signing in: this one, or for a form, the page it was posted from."""
    if request.method in SAFE_METHODS:
        current = request.headers.get("HX-Current-URL") if request.headers.get("HX-Request") else None
        if current:
            parts = urlsplit(current)
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return request.path_qs
    referer = urlsplit(request.headers.get("Referer", ""))
    if referer.netloc and referer.netloc == request.host:
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/"


def to_sign_in(request: web.Request, next_path: str | None = None) -> web.Response:
    """Back to sign-in, remembering where the user was going; an htmx request is told to load the page whole."""
    location = sign_in_location(next_path if next_path is not None else _where_the_user_was(request))
    if request.headers.get("HX-Request"):
        return web.Response(status=204, headers={"HX-Redirect": location})
    return web.Response(status=303, headers={"Location": location})


@web.middleware
async def signed_in_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every page but sign-in needs a session holding a key; an expired one goes back to sign-in."""
    unrouted = request.match_info.http_exception is not None  # no such page (404) or method (405): said as such
    if unrouted or request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    session = await get_session(request)
    if not isinstance(session.get(API_KEY), str):
        return to_sign_in(request)
    return await handler(request)
