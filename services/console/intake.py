"""The console's client of the intake API (docs/reference/intake-api.md), acting with the signed-in merchant's key.

Every answer the console cannot use becomes a typed error, which the pages turn into words: the intake being down
is `IntakeUnavailableError` (a friendly page), a key no longer accepted is `KeyRefusedError` (back to sign-in), and
a refusal of what the person asked for is `RequestRefusedError`, carrying the API's problem document so its message
can be shown beside the field it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from shared.logs import get_logger

log = get_logger(__name__)

REQUEST_TIMEOUT_SECONDS = 10.0


class IntakeError(Exception):
    """The intake API did not give the console what it asked for."""


class IntakeUnavailableError(IntakeError):
    """Unreachable, timed out, or answering 5xx: nothing is known to have happened."""


class KeyRefusedError(IntakeError):
    """401: the key is unknown (a wrong key at sign-in, or one revoked since)."""


class NotFoundError(IntakeError):
    """404: no such item for this merchant (another merchant's answers the same)."""


@dataclass
class RequestRefusedError(IntakeError):
    """A 4xx refusal of the request itself (409, 422...), with the API's RFC 9457 problem document."""

    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.slug}"

    @property
    def slug(self) -> str:
        """The last part of the problem's type, e.g. `amount-exceeds-refundable`."""
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1]

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "The request was refused.")

    def field_messages(self) -> dict[str, str]:
        """The API's per-field messages (`errors: [{"field", "message"}]`), by field."""
        messages: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            if isinstance(error, dict) and isinstance(error.get("field"), str):
                messages.setdefault(error["field"], str(error.get("message", "is not valid")))
        return messages


def path(template: str, *ids: str) -> str:
    """A path with each id quoted: an id typed into a URL never reaches the API as more than one segment."""
    return template.format(*(quote(item, safe="") for item in ids))


class MerchantApi:
    """The intake API as one merchant sees it; the key never leaves this object (nor reaches a log)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._authorization = f"Bearer {api_key}"

    async def get(self, resource: str, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a resource or list: its JSON document."""
        return await self._request("GET", resource, params=dict(query or {}))

    async def post(
        self, resource: str, body: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST a command: the answer's JSON document (a replay with the same key answers the same)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._request("POST", resource, json=dict(body or {}), headers=headers)

    async def delete(self, resource: str) -> None:
        await self._request("DELETE", resource)

    async def _request(self, method: str, resource: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        try:
            async with self._session.request(
                method,
                self._base_url + resource,
                headers={"Authorization": self._authorization, **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                **kwargs,
            ) as response:
                status = response.status
                try:
                    document = await response.json(content_type=None) if status != 204 else {}
                except ValueError:
                    document = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("intake api unreachable", method=method, error=type(exc).__name__)
            raise IntakeUnavailableError(f"{method}: {type(exc).__name__}") from exc
        if 200 <= status < 300 and isinstance(document, dict):
            return document
        problem = document if isinstance(document, dict) else {}
        # Only the status and problem type are logged: a problem's detail may echo what was typed.
        log.info("intake api refused", method=method, status=status, problem=problem.get("type"))
        if status == 401:
            raise KeyRefusedError()
        if status == 404:
            raise NotFoundError(str(problem.get("type", "")))
        if 400 <= status < 500:
            raise RequestRefusedError(status, problem)
        raise IntakeUnavailableError(f"{method}: {status}")


async def key_is_accepted(session: aiohttp.ClientSession, base_url: str, api_key: str) -> bool:
    """Whether the intake API takes this key: one read of the smallest list. Raises IntakeUnavailableError."""
    try:
        await MerchantApi(session, base_url, api_key).get("/v1/payments", {"limit": "1"})
    except KeyRefusedError:
        return False
    return True


async def intake_alive(session: aiohttp.ClientSession, base_url: str) -> bool:
    """The console's readiness: the intake API answers its health check."""
    async with session.get(f"{base_url.rstrip('/')}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
        return response.status == 200
