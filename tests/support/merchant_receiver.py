"""A merchant's webhook endpoint for end-to-end tests: records every request as received, answers as told.

It can be stopped and started again on the same port, so a test can take the merchant's site down and back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from tests.support.processes import free_port


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


class MerchantReceiver:
    """Answers each request with `answer(event_id, nth request for that event)` (200 unless told)."""

    def __init__(self, answer: Callable[[str, int], int] = lambda event_id, nth: 200) -> None:
        self.port = free_port()
        self.answer = answer
        self.received: list[Received] = []
        self._counts: dict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None
        self.changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/paystream"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("webhook-id", "")
        self._counts[event_id] += 1
        status = self.answer(event_id, self._counts[event_id])
        self.received.append(Received(body, {k.lower(): v for k, v in request.headers.items()}, status))
        self.changed.set()
        return web.Response(status=status, text="ok" if status < 300 else "not now")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/paystream", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def requests_for(self, event_id: str) -> list[Received]:
        return [r for r in self.received if r.event_id == event_id]

    def delivered(self, event_id: str) -> list[Received]:
        return [r for r in self.requests_for(event_id) if 200 <= r.answered < 300]
