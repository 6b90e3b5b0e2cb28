"""The HTTP edge of delivery: one POST, bounded by a timeout, its answer reduced to an AttemptResult.

The host is looked up once per attempt and its addresses checked; the connection then goes to those addresses
through a resolver pinned for that request. A name that answers a public address to the check and a private
one a moment later (DNS rebinding) cannot move the connection: there is no second lookup.
"""

from __future__ import annotations

import functools
import socket
import time
from contextvars import ContextVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from services.notifier.rules import AttemptResult
from shared.endpoint_urls import (
    Address,
    UnresolvableHostError,
    UnsafeUrlError,
    checked_addresses,
    parse_endpoint_url,
)

# An endpoint's URL as parse_endpoint_url reads it, by its text: a pure function of it, and every attempt at the
# endpoint would read it again (a URL it refuses raises each time, and is not kept).
_parsed_url = functools.lru_cache(maxsize=4096)(parse_endpoint_url)

# (host, its checked addresses) for the attempt running in this task; the resolver answers nothing else.
_PINNED: ContextVar[tuple[str, list[Address]] | None] = ContextVar("pinned_addresses", default=None)


def _host_key(host: str) -> str:
    # aiohttp folds repeated trailing dots into one before its lookup; the host is the same either way.
    return host.rstrip(".").lower()


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for deliveries: it answers the addresses the sender checked for this request, and
    refuses any other host, so it never looks anything up itself."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        pinned = _PINNED.get()
        if pinned is None or _host_key(pinned[0]) != _host_key(host):
            raise OSError(f"no checked address for {host!r}")
        results: list[ResolveResult] = []
        for address in pinned[1]:
            address_family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    {
                        "hostname": host,
                        "host": str(address),
                        "port": port,
                        "family": address_family,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                )
        if not results:
            raise OSError(f"no checked address of the wanted family for {host!r}")
        return results

    async def close(self) -> None:
        """Nothing to release: it holds no connections."""


def delivery_session() -> aiohttp.ClientSession:
    """The notifier's HTTP client: every connection it opens goes through PinnedResolver (no DNS cache, which
    would answer from an earlier lookup instead)."""
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(), use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector)


class WebhookSender:
    """POSTs deliveries through a `delivery_session()`; the host is checked again at each attempt (unless
    private addresses are allowed) and the connection pinned to what was checked."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float, allow_private: bool) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._allow_private = allow_private

    async def __call__(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        started = time.perf_counter()

        def elapsed_ms() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            endpoint = _parsed_url(url)
            addresses = await checked_addresses(endpoint, allow_private=self._allow_private)
            pinned = _PINNED.set((endpoint.host, addresses))
            try:
                async with self._session.post(
                    endpoint.url, data=body.encode(), headers=headers, timeout=self._timeout, allow_redirects=False
                ) as response:
                    await response.read()
                    return AttemptResult(status_code=response.status, error=None, duration_ms=elapsed_ms())
            finally:
                _PINNED.reset(pinned)
        except UnresolvableHostError as exc:
            return AttemptResult(status_code=None, error=f"connection: {exc}", duration_ms=elapsed_ms())
        except UnsafeUrlError as exc:
            return AttemptResult(status_code=None, error=f"refused: {exc}", duration_ms=elapsed_ms())
        except TimeoutError:
            return AttemptResult(status_code=None, error="timeout: no answer in time", duration_ms=elapsed_ms())
        except aiohttp.ClientError as exc:
            reason = f"{type(exc).__name__}: {exc}"[:300]
            return AttemptResult(status_code=None, error=f"connection: {reason}", duration_ms=elapsed_ms())
