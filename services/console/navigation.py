"""Where a signed-in person goes next: only a path of this console, never another site."""

from __future__ import annotations

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
