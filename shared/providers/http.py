"""Calling a provider over HTTP, with its failures sorted into transient and permanent."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import aiohttp
import orjson

from shared.providers.errors import PermanentGatewayError, TransientGatewayError


def _problem_code(text: str) -> str | None:
    """The provider's error code in a refusal's body: Stripe's `error.code`, or the last segment of an RFC 9457
    problem's `type` (the sandbox's); None if the body names none."""
    try:
        document = orjson.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str) and error["code"]:
        return str(error["code"])[:64]
    kind = document.get("type")
    if not isinstance(kind, str) or not kind:
        return None
    code = kind.rstrip("/").rsplit("/", 1)[-1].replace("-", "_")
    return code[:64] or None


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    transient_statuses: Collection[int] = (),
    retry_advice_header: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One request; JSON answer on 2xx, TransientGatewayError on 5xx/429/network, Permanent on other 4xx.

    `transient_statuses` adds the 4xx a provider uses for "try again" (Stripe's 409: the same Idempotency-Key
    is still being worked on). `retry_advice_header` names a header in which the provider says itself whether a
    retry can succeed ("true"/"false", Stripe's `Stripe-Should-Retry`); its word beats the status code.
    """
    try:
        async with session.request(method, url, **kwargs) as response:
            text = await response.text()
            if response.status >= 400:
                advice = response.headers.get(retry_advice_header) if retry_advice_header else None
                transient = response.status == 429 or response.status >= 500 or response.status in transient_statuses
                if advice == "true" or (transient and advice != "false"):
                    raise TransientGatewayError(f"{method} {url} answered {response.status}")
                raise PermanentGatewayError(
                    f"{method} {url} answered {response.status}: {text[:300]}",
                    status=response.status,
                    code=_problem_code(text),
                )
            try:
                payload = orjson.loads(text) if text.strip() else None
            except ValueError as exc:
                raise TransientGatewayError(f"{method} {url} answered with a body that is not JSON") from exc
            if not isinstance(payload, dict):
                raise PermanentGatewayError(f"{method} {url} answered with a non-object")
            return payload
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
        raise TransientGatewayError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
