"""Calling a provider over HTTP, with its failures sorted into transient and permanent."""

from __future__ import annotations

from typing import Any

import aiohttp

from shared.providers.errors import PermanentGatewayError, TransientGatewayError


async def request_json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    """One request; JSON answer on 2xx, TransientGatewayError on 5xx/429/network, Permanent on other 4xx."""
    try:
        async with session.request(method, url, **kwargs) as response:
            text = await response.text()
            if response.status == 429 or response.status >= 500:
                raise TransientGatewayError(f"{method} {url} answered {response.status}")
            if response.status >= 400:
                raise PermanentGatewayError(f"{method} {url} answered {response.status}: {text[:300]}")
            try:
                payload = await response.json(content_type=None)
            except ValueError as exc:
                raise TransientGatewayError(f"{method} {url} answered with a body that is not JSON") from exc
            if not isinstance(payload, dict):
                raise PermanentGatewayError(f"{method} {url} answered with a non-object")
            return payload
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
        raise TransientGatewayError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
