"""Where a signed-in person goes next: only a path of this console, never another site; and the links from one
page of a list to the next."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

HOME = "/"


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site (`/payments?status=FAILED`), else the overview.

    Refused: absolute URLs, scheme-relative `//host`, backslashes (browsers read `/\\host` as `//host`), control
    characters, and anything that is not a path to begin with.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return HOME
    if "\\" in target or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target) or len(target) > 2000:
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return HOME
    return target


def cursors(query: Mapping[str, str]) -> dict[str, str]:
    """The page cursors the request carries (`starting_after`, `ending_before`), passed on to the API as given."""
    return {name: query[name] for name in ("starting_after", "ending_before") if query.get(name)}


def page_links(
    kept: Mapping[str, str], api: Mapping[str, str], items: Sequence[dict[str, Any]], has_more: bool
) -> dict[str, dict[str, str] | None]:
    """Cursor links to the newer and older pages of a list newest first, each keeping the filters in `kept` that
    are set; `api` is the query this page was asked with, `items` what it holds."""
    filters = {k: v for k, v in kept.items() if v}
    backwards = "ending_before" in api and "starting_after" not in api
    newer = older = None
    if items:
        if (backwards and has_more) or (not backwards and "starting_after" in api):
            newer = {**filters, "ending_before": items[0]["id"]}
        if (not backwards and has_more) or backwards:
            older = {**filters, "starting_after": items[-1]["id"]}
    return {"newer": newer, "older": older}
