"""Calling a provider over HTTP, with its failures sorted into transient and permanent."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from shared.providers.errors import PermanentGatewayError, TransientGatewayError


def _problem_code(text: str) -> str | None:
    """The last segment of an RFC 9457 problem's `type` (the sandbox's error code), if the body is one."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    kind = document.get("type") if isinstance(document, dict) else None
    if not isinstance(kind, str) or not kind:
        return None
    code = kind.rstrip("/").rsplit("/", 1)[-1].replace("-", "_")
    return code[:64] or None


async def request_json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    """One request; JSON answer on 2xx, TransientGatewayError on 5xx/429/network, Permanent on other 4xx."""
    try:
        async with session.request(method, url, **kwargs) as response:
            text = await response.text()
            if response.status == 429 or response.status >= 500:
                raise TransientGatewayError(f"{method} {url} answered {response.status}")
            if response.status >= 400:
                raise PermanentGatewayError(
                    f"{method} {url} answered {response.status}: {text[:300]}", code=_problem_code(text)
                )
            try:
                payload = await response.json(content_type=None)
            except ValueError as exc:
                raise TransientGatewayError(f"{method} {url} answered with a body that is not JSON") from exc
            if not isinstance(payload, dict):
                raise PermanentGatewayError(f"{method} {url} answered with a non-object")
            return payload
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
        raise TransientGatewayError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
