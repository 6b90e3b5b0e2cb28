"""The rules for merchant webhook URLs (docs/reference/merchant-webhooks-security.md).

One parser decides: yarl, the one aiohttp sends with. A URL that a browser's (WHATWG) parser would read
differently, so that a person looking at it or another tool checking it would see another host, is refused
rather than interpreted. A host may only be, or resolve to, a globally reachable address (unless
WEBHOOK_ALLOW_PRIVATE_URLS is set), so an endpoint cannot make Paystream call into its own network; and the
sender connects to exactly the addresses it checked (services/notifier/sender.py), never to a second lookup's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from pydantic import AnyUrl, Field, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings
from yarl import URL

from shared.config import SETTINGS_CONFIG

RESOLVE_TIMEOUT_SECONDS = 3.0
MAX_URL_LENGTH = 2048

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The browser's reading, used only to find URLs it reads differently from yarl (rust-url follows WHATWG).
_WHATWG: TypeAdapter[AnyUrl] = TypeAdapter(AnyUrl)
# The WHATWG "ends in a number" test: such a host is an IPv4 address to a browser, in any of its legacy
# spellings (2130706433, 0x7f.1, 127.1), while yarl and the resolver may read it as a name or not at all.
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0[xX][0-9a-fA-F]*)")
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# Ranges that Python 3.11's `is_global` still calls global, from IANA's special-purpose registries.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.8 and the NAT64 discovery addresses)
        "192.88.99.0/24",  # the deprecated 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "240.0.0.0/4",  # reserved, and the broadcast address
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
    )
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
# IPv6 forms that carry an IPv4 address a router or the kernel may deliver to: the address inside decides.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeUrlError(ValueError):
    """The URL may not be called: not a plain http(s) URL, read differently by a browser, or not public."""


class UnresolvableHostError(UnsafeUrlError):
    """The host names no address (now): a failure to connect rather than a URL refused for good."""


@dataclass(frozen=True)
class EndpointUrl:
    """A webhook URL as the sender will use it: the host as the connector looks it up, and the port."""

    url: URL
    host: str
    port: int

    @property
    def literal_address(self) -> Address | None:
        """The host's address when the URL names one rather than a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def _authority(text: str) -> str:
    rest = text.split("://", 1)[1] if "://" in text else ""
    return re.split(r"[/?#]", rest, maxsplit=1)[0]


def _browser_disagrees(text: str, url: URL) -> bool:
    try:
        seen = _WHATWG.validate_python(text)
    except ValidationError:
        return True
    # Paths and queries compared decoded: yarl re-spells escapes (%7E as ~, %2f as %2F) that mean the same.
    ours = (url.scheme, url.raw_host, url.port, unquote(url.raw_path or "/"), unquote(url.raw_query_string))
    theirs = (
        seen.scheme,
        (seen.host or "").strip("[]"),
        seen.port,
        unquote(seen.path or "/"),
        unquote(seen.query or ""),
    )
    return ours != theirs


def parse_endpoint_url(text: str) -> EndpointUrl:
    """The URL as yarl reads it, if it is an absolute http(s) URL that every parser reads the same way.

    Raises UnsafeUrlError naming the first rule it breaks.
    """
    if len(text) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"must be at most {MAX_URL_LENGTH} characters")
    if not all("\x21" <= char <= "\x7e" for char in text):
        raise UnsafeUrlError(
            "must be printable ASCII, with no spaces or control characters"
            " (write an international host in its xn-- form and percent-encode the path)"
        )
    if "\\" in text:
        raise UnsafeUrlError("must not contain a backslash (a browser reads it as a slash, other parsers do not)")
    if _BROKEN_ESCAPE.search(text):
        raise UnsafeUrlError("must follow each % with two hex digits (a parser would send it as %25 or as is)")
    scheme = text.split(":", 1)[0].lower()
    if scheme not in ("http", "https") or not text[len(scheme) :].startswith("://"):
        raise UnsafeUrlError("must be an absolute http or https URL, such as https://shop.example/webhooks")
    authority = _authority(text)
    if "@" in authority:
        raise UnsafeUrlError("must not carry a user name or password (put credentials in the path or query)")
    if "%" in authority:
        raise UnsafeUrlError("must not percent-encode its host")
    try:
        url = URL(text)
        host, port = url.raw_host, url.port
    except ValueError as exc:
        raise UnsafeUrlError(f"is not a valid URL: {exc}") from None
    if not host:
        raise UnsafeUrlError("must name a host")
    if port is None or not 0 < port < 65536:
        raise UnsafeUrlError("must name a port from 1 to 65535, or none")
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if ":" not in host and _NUMERIC_LABEL.fullmatch(last_label):
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise UnsafeUrlError("must write an IPv4 address as four decimal numbers, such as 203.0.113.7")
    if _browser_disagrees(text, url):
        raise UnsafeUrlError("is read differently by a browser's URL parser; write it in its plain form")
    return EndpointUrl(url=url, host=host, port=port)


def unwrapped(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped, 6to4, NAT64 or IPv4-compatible IPv6 address; else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: Address) -> bool:
    """Globally reachable: not loopback, private, shared, link-local, reserved, documentation or multicast."""
    inner = unwrapped(address)
    if not inner.is_global or inner.is_multicast or any(inner in net for net in _NOT_GLOBAL):
        return False
    return isinstance(inner, ipaddress.IPv4Address) or inner in _GLOBAL_UNICAST_V6


async def resolve(host: str) -> list[Address]:
    """Every address the host names (itself, if it is an address), looked up once. UnsafeUrlError if none."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnresolvableHostError(f"the host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        raise UnresolvableHostError(f"the host {host!r} does not resolve")
    return addresses


def check_addresses(addresses: list[Address], *, allow_private: bool) -> None:
    """UnsafeUrlError unless every address is public (or private addresses are allowed)."""
    if allow_private:
        return
    for address in addresses:
        if not is_public(address):
            raise UnsafeUrlError(f"the host is or resolves to an address that is not public ({address})")


async def checked_addresses(endpoint: EndpointUrl, *, allow_private: bool) -> list[Address]:
    """The host's addresses, looked up once and each checked: the only addresses a delivery may connect to."""
    addresses = await resolve(endpoint.host)
    check_addresses(addresses, allow_private=allow_private)
    return addresses


async def check_public_url(url: str, *, allow_private: bool) -> EndpointUrl:
    """The parsed URL, if it may receive webhooks; UnsafeUrlError otherwise (used at registration).

    With private addresses allowed (a test or an internal deployment) the host need not resolve yet.
    """
    endpoint = parse_endpoint_url(url)
    if not allow_private:
        await checked_addresses(endpoint, allow_private=False)
    return endpoint


class EndpointUrlSettings(BaseSettings):
    """Whether endpoint URLs may be private: of the two services that judge them, the intake (at registration) and
    the notifier (before each delivery), which must agree."""

    model_config = SETTINGS_CONFIG

    webhook_allow_private_urls: bool = Field(
        default=False,
        description="let merchant webhook endpoints point at loopback, link-local or private addresses (development"
        " only: it is the SSRF guard); `true` under `make run` and in tests",
    )
