"""Driving the console over HTTP as a browser would: its own cookie jar, CSRF tokens read from the pages."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

from services.console.app import SESSION_COOKIE, create_app
from services.console.settings import ConsoleSettings

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
DEMO_KEY = "sk_test_demo"


def csrf_token(page: str) -> str:
    """The first form's CSRF token on a page."""
    found = _TOKEN.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


class ConsoleVisitor:
    """One person at the console: a session of cookies, pages fetched and forms posted from them."""

    def __init__(self, client: TestClient, settings: ConsoleSettings) -> None:
        self.client = client
        self.settings = settings

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.client.get(path, allow_redirects=False, **kwargs)

    async def page(self, path: str) -> str:
        response = await self.get(path)
        text = await response.text()
        assert response.status == 200, f"GET {path}: {response.status}\n{text[:2000]}"
        return text

    async def post(
        self, path: str, form: dict[str, Any], *, from_page: str | None = None, origin: str | None = None
    ) -> ClientResponse:
        """Post a form as a browser does from `from_page` (whose CSRF token it carries) at the console's origin."""
        data = dict(form)
        if from_page is not None:
            data.setdefault("csrf_token", csrf_token(await self.page(from_page)))
        headers = {"Origin": origin or self.origin}
        return await self.client.post(path, data=data, headers=headers, allow_redirects=False)

    async def sign_in(self, api_key: str = DEMO_KEY, next_path: str = "/") -> ClientResponse:
        return await self.post("/sign-in", {"api_key": api_key, "next": next_path}, from_page="/sign-in")

    def forge_session(self, data: dict[str, Any], *, age_seconds: float = 0) -> None:
        """Put a session cookie sealed with the console's key into the jar, as if made `age_seconds` ago."""
        key = self.settings.console_session_key[0].get_secret_value()
        created = int(time.time() - age_seconds)
        sealed = Fernet(key).encrypt_at_time(json.dumps({"created": created, "session": data}).encode(), created)
        self.client.session.cookie_jar.update_cookies({SESSION_COOKIE: sealed.decode()}, self.client.make_url("/"))


@asynccontextmanager
async def console_visitor(intake_url: str, **settings: Any) -> AsyncIterator[ConsoleVisitor]:
    """The console application in this process, reaching the intake API at `intake_url`, and a visitor of it."""
    configured = ConsoleSettings(intake_url=intake_url, **settings)
    async with TestClient(TestServer(create_app(configured))) as client:
        yield ConsoleVisitor(client, configured)
