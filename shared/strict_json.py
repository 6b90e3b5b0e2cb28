"""JSON as RFC 8259 says it travels: UTF-8 text, each object key once. Shared by every reader of a body."""

from __future__ import annotations

import json
from typing import Any


class StrictJSONError(ValueError):
    """The bytes are not one strict JSON document; the message says why in a sentence."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise StrictJSONError(f"the key {json.dumps(key)} appears twice in one object")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON value")


# No number we read needs more digits; the bound applies before conversion (int() of 4,301 digits raises
# ValueError, and converting thousands costs quadratic time).
MAX_NUMBER_CHARACTERS = 100


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARACTERS:
        raise StrictJSONError(f"a number has more than {MAX_NUMBER_CHARACTERS} digits")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARACTERS:
        raise StrictJSONError(f"a number has more than {MAX_NUMBER_CHARACTERS} digits")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJSONError(f"the number {text} is too large for a double")
    return value


# The decoder json.loads would build with these hooks, built once: json.loads makes a decoder and its scanner anew
# for every call given a hook, which cost as much as the parse itself (a payment request's body).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_integer, parse_float=_real
)


def loads_strict(raw: bytes) -> Any:
    """Parse `raw` refusing what a lenient parser would guess at: other encodings (Python's json would
    sniff UTF-16), duplicate keys (the last would silently win), NaN/Infinity, numbers of more than
    MAX_NUMBER_CHARACTERS characters or beyond a double's range, and nesting past the parser."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJSONError("it is not UTF-8 text") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except StrictJSONError:
        raise
    except RecursionError:
        raise StrictJSONError("it is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
