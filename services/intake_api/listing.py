"""Lists with cursor pagination (docs/reference/merchant-webhooks.md): `limit`, `starting_after`, `ending_before`,
`has_more`.

Newest first. A page after a cursor holds only what is older than the cursor, so payments or events created
while a client pages through never make it skip or repeat an item. Given both cursors, a page holds what lies
between them (older than `starting_after`, newer than `ending_before`), from the newest.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
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
# The longest ISO 8601 date-time worth reading: 2026-01-01T00:00:00.123456789+01:00 is 35 characters.
_TIME_MAX = 40
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


def query_value(query: MultiMapping[str], name: str, *, max_length: int, rule: str) -> str | None:
    """The one gate of every list parameter: given at most once, and its length bounded before anything
    converts it (Python's int() alone would take 4,300 digits, then raise). `rule` says what the parameter
    must be; it is the message of every refusal, so a client learns the rule, not which check tripped."""
    values = query.getall(name, [])
    if len(values) > 1:
        raise invalid(name, "must be given at most once")
    if not values:
        return None
    value = values[0]
    if not 0 < len(value) <= max_length or "\x00" in value:
        raise invalid(name, rule)
    return value


def integer_parameter(query: MultiMapping[str], name: str, low: int, high: int) -> int | None:
    """A whole number from `low` to `high` (non-negative bounds), written in plain decimal digits."""
    rule = f"must be an integer from {low} to {high}"
    raw = query_value(query, name, max_length=len(str(high)), rule=rule)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise invalid(name, rule)
    return int(raw)


def _cursor(query: MultiMapping[str], name: str) -> str | None:
    rule = "must be the id of an item of this list"
    value = query_value(query, name, max_length=_ID_MAX, rule=rule)
    if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
        raise invalid(name, rule)
    return value


def cursor_not_found(name: str, what: str) -> Problem:
    """A cursor naming nothing the merchant can list: 404, like reading that item would be."""
    return Problem(404, f"{what}-not-found", f"{name} names no {what} of yours.")


def parse_page(query: MultiMapping[str]) -> Page:
    limit = integer_parameter(query, "limit", 1, MAX_LIST_LIMIT)
    page_size = DEFAULT_LIST_LIMIT if limit is None else limit
    return Page(page_size, _cursor(query, "starting_after"), _cursor(query, "ending_before"))


def choice_filter(query: MultiMapping[str], name: str, choices: Collection[str]) -> str | None:
    """One of `choices`, spelt exactly."""
    rule = f"must be one of {', '.join(choices)}"
    value = query_value(query, name, max_length=max(map(len, choices)), rule=rule)
    if value is not None and value not in choices:
        raise invalid(name, rule)
    return value


def text_filter(query: MultiMapping[str], name: str, max_length: int = 128) -> str | None:
    """Text to match exactly: 1 to `max_length` characters, none of them NUL (which PostgreSQL cannot hold)."""
    return query_value(query, name, max_length=max_length, rule=f"must be 1 to {max_length} characters")


def time_filter(query: MultiMapping[str], name: str) -> datetime | None:
    """An ISO 8601 date-time (UTC if it names no offset) or Unix seconds, within what the database can hold:
    0001-01-01 to 9999-12-31 once converted to UTC (the driver converts, and fails outside those years)."""
    rule = "must be an ISO 8601 date-time or Unix seconds, from 0001-01-01 to 9999-12-31 in UTC"
    value = query_value(query, name, max_length=_TIME_MAX, rule=rule)
    if value is None:
        return None
    try:
        if value.isascii() and value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        parsed = _DATE_TIME.validate_python(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        raise invalid(name, rule) from None


def keyset_page(rows: list[asyncpg.Record], page: Page) -> tuple[list[asyncpg.Record], bool]:
    """Rows fetched one beyond the limit (oldest first when backwards) → the page newest first, has_more."""
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if page.backwards:
        rows.reverse()
    return rows, has_more


async def newest_first(
    pool: asyncpg.Pool,
    page: Page,
    merchant_id: str,
    *,
    select: str,
    filters: Iterable[tuple[str, object]],
    item: str,
    cursor_table: str,
    alias: str = "",
) -> tuple[list[asyncpg.Record], bool]:
    """One page of the merchant's items newest first, keyed by (created_at, id), and whether more follow.

    `select` is the query up to its WHERE (its item table, or its alias, `alias`); `filters` are conditions with
    `?` for their value, left out where the value is None; a cursor is looked up in `cursor_table` by id and
    merchant, and one that names no `item` of the merchant is refused.
    """
    args: list[Any] = [merchant_id]
    conditions = [f"{alias}merchant_id = $1"]
    for sql, value in filters:
        if value is not None:
            args.append(value)
            conditions.append(sql.replace("?", f"${len(args)}"))
    for name, cursor, comparison in page.cursors():
        found = await pool.fetchrow(
            f"SELECT created_at, id FROM {cursor_table} WHERE id = $1 AND merchant_id = $2", cursor, merchant_id
        )
        if found is None:
            raise cursor_not_found(name, item)
        args.extend([found["created_at"], found["id"]])
        conditions.append(f"({alias}created_at, {alias}id) {comparison} (${len(args) - 1}, ${len(args)})")
    order = "ASC" if page.backwards else "DESC"
    args.append(page.limit + 1)
    rows = await pool.fetch(
        f"{select} WHERE {' AND '.join(conditions)}"
        f" ORDER BY {alias}created_at {order}, {alias}id {order} LIMIT ${len(args)}",
        *args,
    )
    return keyset_page(list(rows), page)


async def list_payments(pool: asyncpg.Pool, merchant_id: str, query: MultiMapping[str]) -> tuple[list[Payment], bool]:
    """The merchant's payments newest first, through ledger.payments_v1 (the ledger's (merchant_id, created_at, id)
    index serves it)."""
    page = parse_page(query)
    status = choice_filter(query, "status", tuple(PaymentStatus.__members__))
    reference = text_filter(query, "reference")
    # Customers type their address in any case; a search finds it however it was typed (RFC 5321 allows a
    # case-sensitive local part, but no real mailbox depends on it).
    customer_email = text_filter(query, "customer_email", 254)
    created_gte, created_lte = time_filter(query, "created[gte]"), time_filter(query, "created[lte]")

    rows, has_more = await newest_first(
        pool,
        page,
        merchant_id,
        select=f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger.payments_v1",
        filters=(
            ("status = ?", status),
            ("reference = ?", reference),
            ("lower(customer_email) = lower(?)", customer_email),
            ("created_at >= ?", created_gte),
            ("created_at <= ?", created_lte),
        ),
        item="payment",
        cursor_table="ledger.payments_v1",
    )
    return [Payment(**{name: row[name] for name in LEDGER_COLUMNS}) for row in rows], has_more
