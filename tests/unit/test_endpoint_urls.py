"""The webhook URL rules (shared/endpoint_urls.py, docs/reference/merchant-webhooks-security.md): yarl decides,
a URL a browser reads otherwise is refused, and only global addresses pass."""

from __future__ import annotations

import ipaddress

import pytest

from shared.endpoint_urls import UnsafeUrlError, check_public_url, is_public, parse_endpoint_url

PLAIN = {
    "https://shop.example/webhooks/paystream": ("shop.example", 443),
    "http://shop.example:8080/hooks?merchant=42&v=1": ("shop.example", 8080),
    "https://93.184.216.34/hook": ("93.184.216.34", 443),
    "https://[2606:2800:220:1::]/hook": ("2606:2800:220:1::", 443),
    "https://xn--bcher-kva.example/": ("xn--bcher-kva.example", 443),
    "HTTPS://Shop.Example/Hooks": ("shop.example", 443),
    # Escapes yarl re-spells (%7E as ~, lower-case hex in upper case) mean the same to both parsers.
    "https://shop.example/hooks/%7Euser?q=%e2%82%ac": ("shop.example", 443),
    "https://shop.example/a%2fb;v=1?next=https://shop.example/x#part": ("shop.example", 443),
}


@pytest.mark.parametrize(("url", "expected"), PLAIN.items(), ids=PLAIN.keys())
def test_a_plain_url_is_read_as_the_sender_will_use_it(url: str, expected: tuple[str, int]) -> None:
    endpoint = parse_endpoint_url(url)
    assert (endpoint.host, endpoint.port) == expected


# Each is a URL that yarl and a browser (WHATWG) read differently, or that only one of them reads at all.
DIVERGENT = {
    "a backslash before userinfo (issue 24 §4)": "http://127.0.0.1:80\\@93.184.216.34/",
    "localhost behind a backslash": "http://localhost:80\\@93.184.216.34/",
    "[::1] behind a backslash": "http://[::1]:80\\@93.184.216.34/",
    "a backslash in the path": "https://shop.example\\hooks",
    "userinfo": "https://user:pass@shop.example/",
    "a bare @": "https://@shop.example/",
    "a tab inside": "https://shop.exa\tmple/",
    "a newline inside": "https://shop.example/\nhooks",
    "a leading space": " https://shop.example/",
    "a trailing space": "https://shop.example/ ",
    "a NUL": "https://shop.example/\x00",
    "a DEL": "https://shop.example/\x7f",
    "a no-break space": "https://shop.example/\xa0",
    "a percent-encoded host": "http://%31%32%37.0.0.1/",
    "a percent-encoded letter in the host": "http://ex%41mple.com/",
    "a decimal IPv4": "http://2130706433/",
    "a hex IPv4": "http://0x7f.1/",
    "a short IPv4": "http://127.1/",
    "an octal IPv4": "http://0177.0.0.1/",
    "five numeric labels": "http://1.2.3.4.5/",
    "a hex last label": "http://shop.example.0x10/",
    "a Unicode host": "https://bücher.example/",
    "a fullwidth dot": "https://shop\uff0eexample/",
    "a malformed percent escape in the path": "https://shop.example/%zz",
    "a lone percent sign in the query": "https://shop.example/?discount=5%",
    "one slash": "http:/shop.example/",
    "no slash": "http:shop.example",
    "no host": "http:///hooks",
    "port 0": "http://shop.example:0/",
    "a port past 65535": "http://shop.example:65536/",
    "another scheme": "ftp://shop.example/",
    "a javascript URL": "javascript:alert(1)",
    "a relative URL": "/hooks",
}


@pytest.mark.parametrize("url", DIVERGENT.values(), ids=DIVERGENT.keys())
def test_a_url_that_parsers_read_differently_is_refused(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        parse_endpoint_url(url)


NOT_GLOBAL = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",  # shared address space (issue 24 §4)
    "192.0.0.8",  # IETF protocol assignment (issue 24 §4); Python 3.11 calls it global
    "192.0.0.170",
    "192.0.2.1",
    "198.18.0.1",
    "203.0.113.9",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1 (issue 24 §4)
    "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::1",
    "2001::1",  # Teredo
    "2001:db8::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "100::1",
]


@pytest.mark.parametrize("address", NOT_GLOBAL)
def test_an_address_that_is_not_global_is_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1::", "2002:5db8:d822::1"])
def test_a_global_address_is_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url", ["http://100.64.0.1/", "http://[2002:7f00:1::]/", "http://192.0.0.8/", "http://[::ffff:7f00:1]/"]
)
async def test_registration_refuses_a_url_on_an_address_that_is_not_global(url: str) -> None:
    with pytest.raises(UnsafeUrlError, match="not public"):
        await check_public_url(url, allow_private=False)


async def test_registration_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(UnsafeUrlError, match="not public"):
        await check_public_url("http://localhost:8080/hooks", allow_private=False)
