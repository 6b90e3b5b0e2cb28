"""The HTTP edge of delivery: one POST, bounded by a timeout, its answer reduced to an AttemptResult."""

from __future__ import annotations

import time

import aiohttp

from services.notifier.rules import AttemptResult
from shared.endpoint_urls import UnsafeUrlError, check_public_url


class WebhookSender:
    """POSTs deliveries; with private addresses refused, the host is checked again at each attempt."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float, allow_private: bool) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._allow_private = allow_private

    async def __call__(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            await check_public_url(url, allow_private=self._allow_private)
            async with self._session.post(
                url, data=body.encode(), headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                return AttemptResult(status_code=response.status, error=None, duration_ms=elapsed_ms())
        except UnsafeUrlError as exc:
            return AttemptResult(status_code=None, error=f"refused: {exc}", duration_ms=elapsed_ms())
        except TimeoutError:
            return AttemptResult(status_code=None, error="timeout: no answer in time", duration_ms=elapsed_ms())
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            return AttemptResult(status_code=None, error=f"connection: {reason}", duration_ms=elapsed_ms())
