"""Lists with cursor pagination (docs/reference/merchant-webhooks.md): `limit`, `starting_after`, `ending_before`,
`has_more`.

Newest first. A page after a cursor holds only what is older than the cursor, so payments or events created
while a client pages through never make it skip or repeat an item. Given both cursors, a page holds what lies
between them (older than `starting_after`, newer than `ending_before`), from the newest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from multidict import MultiMapping
from pydantic import TypeAdapter

from services.intake_api.models import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Payment
from shared.events import PaymentStatus
from shared.payment_resource import LEDGER_COLUMNS
from shared.web import Problem

_ID_MAX = 64
_DATE_TIME = TypeAdapter(datetime)


@dataclass(frozen=True)
class Page:
    limit: int
    starting_after: str | None
    ending_before: str | None

    @property
    def backwards(self) -> bool:
        """Paging towards newer items: the rows are fetched oldest first, then turned round."""
        return self.ending_before is not None and self.starting_after is None

    def cursors(self) -> list[tuple[str, str, str]]:
        """(parameter, its id, the comparison an item must pass against it) for each cursor given."""
        given = [("starting_after", self.starting_after, "<"), ("ending_before", self.ending_before, ">")]
        return [(name, value, comparison) for name, value, comparison in given if value is not None]


def invalid(field: str, message: str) -> Problem:
    return Problem(
        422, "validation-error", "The query has invalid parameters.", errors=[{"field": field, "message": message}]
    )


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise invalid(name, "must be given at most once")
    return values[0] if values else None


def _cursor(query: MultiMapping[str], name: str) -> str | None:
    value = _single(query, name)
    if value is not None and not (0 < len(value) <= _ID_MAX and value.isascii() and value.isprintable()):
        raise invalid(name, "must be the id of an item of this list")
    return value


def cursor_not_found(name: str, what: str) -> Problem:
    """A cursor naming nothing the merchant can list: 404, like reading that item would be."""
    return Problem(404, f"{what}-not-found", f"{name} names no {what} of yours.")


def parse_page(query: MultiMapping[str]) -> Page:
    raw = _single(query, "limit")
    limit = DEFAULT_LIST_LIMIT
    if raw is not None:
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
            raise invalid("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
        limit = int(raw)
    return Page(limit, _cursor(query, "starting_after"), _cursor(query, "ending_before"))


def text_filter(query: MultiMapping[str], name: str, max_length: int = 128) -> str | None:
    value = _single(query, name)
    if value is not None and (not value or len(value) > max_length or "\x00" in value):
        raise invalid(name, f"must be 1 to {max_length} characters")
    return value


def time_filter(query: MultiMapping[str], name: str) -> datetime | None:
    """An ISO 8601 date-time (UTC if it names no offset) or Unix seconds."""
    value = _single(query, name)
    if value is None:
        return None
    try:
        if value.isascii() and value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        parsed = _DATE_TIME.validate_python(value)
    except (ValueError, OverflowError, OSError):
        raise invalid(name, "must be an ISO 8601 date-time or Unix seconds") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def keyset_page(rows: list[asyncpg.Record], page: Page) -> tuple[list[asyncpg.Record], bool]:
    """Rows fetched one beyond the limit (oldest first when backwards) → the page newest first, has_more."""
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if page.backwards:
        rows.reverse()
    return rows, has_more


async def list_payments(pool: asyncpg.Pool, merchant_id: str, query: MultiMapping[str]) -> tuple[list[Payment], bool]:
    """The merchant's payments newest first, through ledger.payments_v1 (the ledger's (merchant_id, created_at, id)
    index serves it)."""
    page = parse_page(query)
    status = _single(query, "status")
    if status is not None and status not in PaymentStatus.__members__:
        raise invalid("status", f"must be one of {', '.join(PaymentStatus.__members__)}")
    reference = text_filter(query, "reference")
    created_gte, created_lte = time_filter(query, "created[gte]"), time_filter(query, "created[lte]")

    args: list[Any] = [merchant_id]
    conditions = ["merchant_id = $1"]

    def bind(sql: str, value: object) -> None:
        args.append(value)
        conditions.append(sql.replace("?", f"${len(args)}"))

    for sql, value in (
        ("status = ?", status),
        ("reference = ?", reference),
        ("created_at >= ?", created_gte),
        ("created_at <= ?", created_lte),
    ):
        if value is not None:
            bind(sql, value)
    for name, cursor, comparison in page.cursors():
        found = await pool.fetchrow(
            "SELECT created_at, id FROM ledger.payments_v1 WHERE id = $1 AND merchant_id = $2", cursor, merchant_id
        )
        if found is None:
            raise cursor_not_found(name, "payment")
        args.extend([found["created_at"], found["id"]])
        conditions.append(f"(created_at, id) {comparison} (${len(args) - 1}, ${len(args)})")
    order = "ASC" if page.backwards else "DESC"
    args.append(page.limit + 1)
    rows = await pool.fetch(
        f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger.payments_v1 WHERE {' AND '.join(conditions)}"
        f" ORDER BY created_at {order}, id {order} LIMIT ${len(args)}",
        *args,
    )
    rows, has_more = keyset_page(list(rows), page)
    return [Payment(**{name: row[name] for name in LEDGER_COLUMNS}) for row in rows], has_more
