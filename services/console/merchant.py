"""The signed-in merchant's view of the intake API, and what the pages do when it cannot answer."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp_session import get_session

from services.console.guard import API_KEY, Handler, to_sign_in
from services.console.intake import IntakeUnavailableError, KeyRefusedError, MerchantApi, NotFoundError
from shared.logs import get_logger
from shared.web import Problem

log = get_logger(__name__)

HTTP = web.AppKey("http", aiohttp.ClientSession)
INTAKE_URL = web.AppKey("intake_url", str)


async def merchant_api(request: web.Request) -> MerchantApi:
    """The intake API with the key of the session's merchant (signed_in_only made sure there is one)."""
    session = await get_session(request)
    return MerchantApi(request.app[HTTP], request.app[INTAKE_URL], str(session[API_KEY]))


@web.middleware
async def intake_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The intake being down is a page saying so; a key revoked since sign-in ends the session; an id that names
    nothing of this merchant's is a 404 page."""
    try:
        return await handler(request)
    except IntakeUnavailableError:
        raise Problem(
            503,
            "intake-unavailable",
            "The console could not reach Paystream's API. Nothing was changed. Please try again in a moment.",
            headers={"Retry-After": "5"},
        ) from None
    except KeyRefusedError:
        log.info("api key no longer accepted; session ended")
        session = await get_session(request)
        session.invalidate()
        return to_sign_in(request)
    except NotFoundError:
        raise Problem(404, "not-found", "There is nothing here: check the link, or search for it.") from None
