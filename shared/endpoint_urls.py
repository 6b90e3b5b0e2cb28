"""The guard on merchant webhook URLs (docs/reference/merchant-webhooks.md): http(s) only, and no loopback, link-local
or private
address unless WEBHOOK_ALLOW_PRIVATE_URLS is set, so an endpoint cannot make Paystream call into its own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

RESOLVE_TIMEOUT_SECONDS = 3.0


class UnsafeUrlError(ValueError):
    """The URL may not be called: wrong scheme, no host, or an address inside a private network."""


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def check_scheme(url: str) -> str:
    """The URL's host, if it is an absolute http(s) URL; UnsafeUrlError otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise UnsafeUrlError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError("must be an http or https URL")
    if not host:
        raise UnsafeUrlError("must name a host")
    return host


async def check_public_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or whose host is or resolves to a non-public address."""
    host = check_scheme(url)
    if allow_private:
        return
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                RESOLVE_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise UnsafeUrlError(f"the host {host!r} does not resolve") from exc
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if _refused(address):
            raise UnsafeUrlError(f"the host resolves to a loopback, link-local or private address ({address})")
