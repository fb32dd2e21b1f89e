"""Creator statements checked against Stripe: what our ledger says a creator made in a month
(`billing.selectors.creator_statement_list`) against what Stripe moved for their account.

Stripe's side, for payments that are destination charges: the transfers to the account
(gross), less their reversals (refunds and lost disputes taken back), less our application
fees net of fee refunds; each amount counted in the month Stripe created it, as our ledger
rows are. A mismatch is stored and logged as an error for a person to look at.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from billing import stripe_client
from billing.models import Creator, StatementReconciliation
from billing.selectors import creator_statement_list, month_bounds

logger = logging.getLogger(__name__)

# Refunds and disputes come at most this long after the payment (card networks allow 120 days
# for a dispute), so older transfers cannot have reversals in the month being checked.
LOOKBACK = timedelta(days=180)


def _stripe_totals(*, account_id: str, month: date) -> dict[str, dict[str, int]]:
    """Per currency: gross, platform_fees, taken_back and net as Stripe holds them."""
    start, end = month_bounds(month)
    lo, hi = int(start.timestamp()), int(end.timestamp())
    client = stripe_client.get_client()
    totals: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("gross", "platform_fees", "taken_back", "net"), 0)
    )

    def within(obj: Any) -> bool:
        return lo <= int(obj["created"]) < hi

    transfers = client.v1.transfers.list(
        params={
            "destination": account_id,
            "created": {"gte": int((start - LOOKBACK).timestamp()), "lt": hi},
            "limit": 100,
        }
    )
    for tr in transfers.auto_paging_iter():
        t = totals[tr["currency"]]
        if within(tr):
            t["gross"] += int(tr["amount"])
        t["taken_back"] += sum(int(r["amount"]) for r in tr["reversals"]["data"] if within(r))
    fees = client.v1.application_fees.list(
        params={"created": {"gte": int((start - LOOKBACK).timestamp()), "lt": hi}, "limit": 100}
    )
    for fee in fees.auto_paging_iter():
        if fee["account"] != account_id:
            continue
        t = totals[fee["currency"]]
        if within(fee):
            t["platform_fees"] += int(fee["amount"])
        t["platform_fees"] -= sum(int(r["amount"]) for r in fee["refunds"]["data"] if within(r))
    for t in totals.values():
        t["net"] = t["gross"] - t["taken_back"] - t["platform_fees"]
    return dict(totals)


def creator_statement_reconcile(*, creator: Creator, month: date) -> list[StatementReconciliation]:
    """Compare the creator's statement for `month` with Stripe and append one row per currency
    (safe to run again: it only adds a newer comparison). Needs a Connect account."""
    account = getattr(creator, "connect", None)
    if account is None:
        return []
    stripe_side = _stripe_totals(account_id=account.stripe_account_id, month=month)
    ours_side = {
        s.currency: {
            "gross": s.gross,
            "platform_fees": s.platform_fees,
            "taken_back": s.refunds + s.disputes,
            "net": s.net,
        }
        for s in creator_statement_list(creator_id=creator.pk, month=month)
    }
    rows = []
    empty = dict.fromkeys(("gross", "platform_fees", "taken_back", "net"), 0)
    for currency in sorted(set(stripe_side) | set(ours_side)):
        ours, theirs = ours_side.get(currency, empty), stripe_side.get(currency, empty)
        row = StatementReconciliation.objects.create(
            creator=creator,
            month=month.replace(day=1),
            currency=currency,
            ours=ours,
            stripe=theirs,
            matches=ours == theirs,
        )
        rows.append(row)
        if not row.matches:
            logger.error(
                "billing.statement_mismatch",
                extra={"creator_id": creator.pk, "month": f"{month:%Y-%m}", "currency": currency},
            )
    return rows


def creator_statements_reconcile_all(
    *, month: date
) -> list[tuple[Creator, StatementReconciliation]]:
    """Every creator with a Connect account, compared for `month` (the month-end job)."""
    return [
        (creator, row)
        for creator in Creator.objects.filter(connect__isnull=False).select_related("connect")
        for row in creator_statement_reconcile(creator=creator, month=month)
    ]
