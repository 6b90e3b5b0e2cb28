"""GET /v1/payments/summary (docs/reference/merchant-webhooks.md): the merchant's payments created in a time range,
counted and summed by status and currency, in one answer whatever their number (the console's overview)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.intake_api.listing import time_filter
from services.intake_api.models import PaymentSummary, PaymentTotal
from services.intake_api.routes import POOL
from shared.web import MERCHANT


async def payment_summary(request: web.Request) -> web.Response:
    """Count and sum by (status, currency), over `created[gte]`..`created[lte]` (either may be left open)."""
    created_gte = time_filter(request.query, "created[gte]")
    created_lte = time_filter(request.query, "created[lte]")
    args: list[Any] = [request[MERCHANT]]
    conditions = ["merchant_id = $1"]
    for sql, value in (("created_at >= ?", created_gte), ("created_at <= ?", created_lte)):
        if value is not None:
            args.append(value)
            conditions.append(sql.replace("?", f"${len(args)}"))
    # Through the ledger's published view, served by its (merchant_id, created_at, id) index as the list is.
    rows = await request.app[POOL].fetch(
        "SELECT status, currency, count(*)::bigint AS count, sum(amount)::bigint AS amount FROM ledger.payments_v1"
        f" WHERE {' AND '.join(conditions)} GROUP BY status, currency ORDER BY status, currency",
        *args,
    )
    totals = [
        PaymentTotal(status=r["status"], currency=r["currency"], count=r["count"], amount=r["amount"]) for r in rows
    ]
    return web.Response(text=PaymentSummary(data=totals).model_dump_json(), content_type="application/json")
