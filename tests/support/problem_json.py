"""Reading an RFC 9457 error answer in tests: the status, the media type, the four members, no stack trace."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

PROBLEM_MEMBERS = {"type": str, "title": str, "status": int, "detail": str}


async def problem_of(response: aiohttp.ClientResponse, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    """Assert `response` is a problem+json answer with `status` (and a type ending in `type_suffix`)."""
    text = await response.text()
    assert response.status == status, f"expected {status}, got {response.status}: {text[:500]}"
    assert response.content_type == "application/problem+json", f"{response.content_type}: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text, text
    problem = json.loads(text)
    assert all(isinstance(problem.get(member), kind) for member, kind in PROBLEM_MEMBERS.items()), problem
    assert problem["status"] == status and problem["detail"]
    if type_suffix is not None:
        assert problem["type"].endswith(type_suffix), problem["type"]
    return problem
