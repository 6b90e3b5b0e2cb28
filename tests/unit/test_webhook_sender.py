"""Delivery connects to the addresses it checked (services/notifier/sender.py): a name that answers a public
address to the check and a loopback one a moment later (DNS rebinding, issue 24 §5) never reaches loopback.

The name's answers come from a stand-in for the system resolver (the event loop's getaddrinfo); the HTTP
exchange is real, with a receiver listening on loopback.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.notifier.sender import WebhookSender, delivery_session
from tests.support.merchant_receiver import MerchantReceiver

PUBLIC = "93.184.216.34"  # never reached: the test machine has no route out, and the attempt times out


class RebindingName:
    """`rebind.test` answers `first` to the first lookup and loopback to every later one."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.lookups = 0

    async def getaddrinfo(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "rebind.test", host
        self.lookups += 1
        address = self.first if self.lookups == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]


@pytest.fixture
async def receiver() -> AsyncIterator[MerchantReceiver]:
    receiver = MerchantReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def rebinding(monkeypatch: pytest.MonkeyPatch) -> RebindingName:
    name = RebindingName(PUBLIC)
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", name.getaddrinfo)
    return name


async def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    receiver: MerchantReceiver, rebinding: RebindingName
) -> None:
    async with delivery_session() as session:
        send = WebhookSender(session, timeout_seconds=0.5, allow_private=False)
        result = await send(f"http://rebind.test:{receiver.port}/hooks/paystream", "{}", {})

    assert result.status_code is None and result.error is not None
    assert receiver.received == []
    assert rebinding.lookups == 1


async def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    receiver: MerchantReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = RebindingName("127.0.0.1")  # first loopback (allowed here), then 127.0.0.1 again: counted, not used
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", name.getaddrinfo)
    async with delivery_session() as session:
        send = WebhookSender(session, timeout_seconds=5, allow_private=True)
        result = await send(f"http://rebind.test:{receiver.port}/hooks/paystream", "{}", {})

    assert result.status_code == 200, result
    assert len(receiver.received) == 1
    assert name.lookups == 1


async def test_the_delivery_session_refuses_a_host_nobody_checked(receiver: MerchantReceiver) -> None:
    """Used outside a sender's attempt, the session has no address to connect to: it fails closed."""
    async with delivery_session() as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError):
            await session.post(f"http://localhost:{receiver.port}/hooks/paystream", data=b"{}")
    assert receiver.received == []


async def test_a_url_refused_at_registration_is_refused_at_delivery_too(receiver: MerchantReceiver) -> None:
    async with delivery_session() as session:
        send = WebhookSender(session, timeout_seconds=5, allow_private=False)
        result = await send(f"http://127.0.0.1:{receiver.port}\\@93.184.216.34/", "{}", {})
    assert result.error is not None and result.error.startswith("refused:")
    assert receiver.received == []
