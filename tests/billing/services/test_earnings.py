"""Refunds and disputes reach the creator's earnings, and the monthly statement reconciles with
what the fake Stripe holds (transfers, reversals, application fees, balance transactions,
refunds, disputes). Everything goes through the fake over HTTP and our signed webhook view."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.models import (
    CheckoutOrder,
    Dispute,
    DisputeStatus,
    License,
    LicenseStatus,
    Sale,
    SaleKind,
)
from billing.selectors import creator_statement_list
from billing.services.checkout import checkout_start
from billing.services.statements import creator_statement_reconcile
from tests.billing.conftest import post_event
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URLS = {
    "success_url": "http://127.0.0.1/s?session_id={CHECKOUT_SESSION_ID}",
    "cancel_url": "http://127.0.0.1/c",
}


class Flow:
    """Buy through Checkout on the fake, then deliver every new event to our webhook view."""

    def __init__(self, shop, fake, client, capture) -> None:
        self.shop, self.fake, self.client, self.capture = shop, fake, client, capture
        self.delivered: set[str] = set()

    def deliver(self) -> None:
        with self.capture(execute=True):
            for event in self.fake.events():
                if event["id"] not in self.delivered:
                    self.delivered.add(event["id"])
                    assert post_event(self.client, event).status_code == 200

    def buy(self, plan) -> tuple[License, str]:
        """The buyer's license and the PaymentIntent that paid (the first invoice's)."""
        buyer = UserFactory()
        checkout_start(buyer=buyer, plan=plan, **URLS)
        order = CheckoutOrder.objects.get(buyer=buyer)
        self.fake.complete_checkout(order.stripe_session_id)
        self.deliver()
        lic = License.objects.get(buyer=buyer)
        session = self.fake.state.get("checkout_sessions", order.stripe_session_id)
        if session["mode"] == "payment":
            return lic, session["payment_intent"]
        payments = self.fake.state.all("invoice_payments")
        paid = [p for p in payments if p["invoice"] == session["invoice"]]
        return lic, paid[0]["payment"]["payment_intent"]


@pytest.fixture
def flow(shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks):
    return Flow(shop, stripe_fake, client, django_capture_on_commit_callbacks)


def test_a_refunded_subscription_invoice_reverses_the_creators_earnings(flow):
    lic, pi_id = flow.buy(flow.shop.subscription)
    flow.fake.refund(pi_id, amount=300, reverse_transfer=True, refund_application_fee=True)
    flow.deliver()
    flow.fake.refund(pi_id, amount=200, reverse_transfer=True, refund_application_fee=True)
    flow.deliver()
    refunds = Sale.objects.filter(kind=SaleKind.REFUND).order_by("pk")
    rows = [(r.gross_amount, r.platform_fee_amount, r.net_amount) for r in refunds]
    assert rows == [(-300, -45, -255), (-200, -30, -170)]  # each refund once, not cumulative
    assert all(r.stripe_invoice_id for r in refunds)
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.ACTIVE  # a subscription's access follows the subscription
    for event in flow.fake.events("charge.refunded"):  # redelivered, in reverse: nothing new
        assert post_event(flow.client, event).status_code == 200
    assert Sale.objects.filter(kind=SaleKind.REFUND).count() == 2


def test_a_lost_dispute_holds_then_deducts_and_reverses_the_transfer(flow):
    lic, pi_id = flow.buy(flow.shop.one_time)
    dp = flow.fake.dispute(pi_id)
    flow.deliver()
    row = Dispute.objects.get()
    assert (row.status, row.amount, row.held, row.exposure) == ("open", 4900, 4165, 6400)
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.SUSPENDED
    (statement,) = creator_statement_list(creator_id=flow.shop.creator.pk, month=_this_month())
    assert (statement.held, statement.net, statement.disputes) == (4165, 4165, 0)
    flow.client.force_login(flow.shop.owner)
    page = flow.client.get("/creator/").content.decode()
    assert 'id="held-usd">$41.65' in page

    flow.fake.close_dispute(dp["id"], won=False)
    flow.deliver()
    row.refresh_from_db()
    assert (row.status, row.held) == (DisputeStatus.LOST, 0)
    assert row.stripe_transfer_reversal_id.startswith("trr_")
    assert row.exposure == 6400 - 4165  # the dispute fee and our fee share stay with us
    deducted = Sale.objects.get(kind=SaleKind.DISPUTE)
    assert (deducted.gross_amount, deducted.platform_fee_amount, deducted.net_amount) == (
        -4900,
        -735,
        -4165,
    )
    transfer = flow.fake.state.all("transfers")[0]
    assert transfer["amount_reversed"] == 4900
    for event in flow.fake.events("charge.dispute.closed"):  # redelivered: settled once
        assert post_event(flow.client, event).status_code == 200
    assert len(flow.fake.state.all("transfer_reversals")) == 1
    assert Sale.objects.filter(kind=SaleKind.DISPUTE).count() == 1


def test_a_won_dispute_releases_the_hold_and_the_license(flow):
    lic, pi_id = flow.buy(flow.shop.one_time)
    dp = flow.fake.dispute(pi_id)
    flow.deliver()
    flow.fake.close_dispute(dp["id"], won=True)
    flow.deliver()
    row = Dispute.objects.get()
    assert (row.status, row.held, row.exposure) == (DisputeStatus.WON, 0, 1500)
    assert row.stripe_transfer_reversal_id == ""
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.ACTIVE
    assert not Sale.objects.filter(kind=SaleKind.DISPUTE).exists()
    assert flow.fake.state.all("transfer_reversals") == []


def _this_month():
    return datetime.now(UTC).date().replace(day=1)


def test_the_monthly_statement_reconciles_with_stripe(flow, stripe_settings):
    from billing.stripe_client import get_client

    shop, fake = flow.shop, flow.fake
    refunded_lic, refunded_pi = flow.buy(shop.one_time)
    _, lost_pi = flow.buy(shop.one_time)
    _, won_pi = flow.buy(shop.one_time)
    _, sub_pi = flow.buy(shop.subscription)
    fake.refund(sub_pi, amount=300, reverse_transfer=True, refund_application_fee=True)
    fake.refund(refunded_pi, reverse_transfer=True, refund_application_fee=True)
    lost, won = fake.dispute(lost_pi), fake.dispute(won_pi)
    flow.deliver()
    fake.close_dispute(lost["id"], won=False)
    fake.close_dispute(won["id"], won=True)
    flow.deliver()
    refunded_lic.refresh_from_db()
    assert refunded_lic.status == LicenseStatus.REVOKED

    (ours,) = creator_statement_list(creator_id=shop.creator.pk, month=_this_month())
    assert (ours.sales, ours.gross, ours.refunds, ours.disputes, ours.held) == (
        4,
        3 * 4900 + 900,
        300 + 4900,
        4900,
        0,
    )
    assert ours.net == ours.gross - ours.platform_fees - ours.refunds - ours.disputes

    # What Stripe holds for the creator's account, read over its API.
    v1 = get_client().v1
    acct = shop.account.stripe_account_id
    transfers = v1.transfers.list({"destination": acct, "limit": 100}).data
    fees = [f for f in v1.application_fees.list({"limit": 100}).data if f["account"] == acct]
    charges = {t["source_transaction"] for t in transfers}
    refunds = [r for r in v1.refunds.list({"limit": 100}).data if r["charge"] in charges]
    assert ours.gross == sum(t["amount"] for t in transfers)
    assert ours.refunds == sum(r["amount"] for r in refunds)
    assert ours.refunds + ours.disputes == sum(t["amount_reversed"] for t in transfers)
    assert ours.disputes == sum(
        v1.disputes.retrieve(d)["amount"]
        for d in (lost["id"], won["id"])
        if v1.disputes.retrieve(d)["status"] == "lost"
    )
    assert ours.platform_fees == sum(f["amount"] - f["amount_refunded"] for f in fees)
    txns = v1.balance_transactions.list({"limit": 100}).data
    earned = sum(t["amount"] for t in txns if t["type"] == "application_fee")
    returned = sum(t["amount"] for t in txns if t["type"] == "application_fee_refund")
    assert ours.platform_fees == earned + returned  # returned is negative
    assert ours.net == (
        sum(t["amount"] - t["amount_reversed"] for t in transfers) - ours.platform_fees
    )

    # The month-end check does the same comparison and keeps it.
    (check,) = creator_statement_reconcile(creator=shop.creator, month=_this_month())
    assert check.matches, (check.ours, check.stripe)
    assert check.stripe["net"] == ours.net
    out = StringIO()
    call_command("billing_reconcile_statements", month=_this_month().strftime("%Y-%m"), stdout=out)
    assert f"{shop.creator.handle} usd ok" in out.getvalue()

    flow.client.force_login(shop.owner)
    api = flow.client.get(
        "/api/v1/billing/creator/statements", {"month": _this_month().strftime("%Y-%m")}
    ).json()
    assert api == [
        {
            "month": _this_month().isoformat(),
            "currency": "usd",
            "sales": 4,
            "gross": ours.gross,
            "platform_fees": ours.platform_fees,
            "refunds": ours.refunds,
            "disputes": ours.disputes,
            "net": ours.net,
            "held": 0,
        }
    ]
    last_month = flow.client.get("/api/v1/billing/creator/statements", {"month": "2001-01"})
    assert last_month.json() == []


def test_money_moved_at_stripe_behind_our_back_is_a_mismatch(flow):
    """A transfer reversal made outside Toolbooth (say, in the Dashboard) is not in our ledger:
    the month-end check says so, and the command fails."""
    from billing.stripe_client import get_client

    flow.buy(flow.shop.one_time)
    transfer = flow.fake.state.all("transfers")[0]
    get_client().v1.transfers.reversals.create(transfer["id"], {"amount": 1000})
    (check,) = creator_statement_reconcile(creator=flow.shop.creator, month=_this_month())
    assert not check.matches
    assert (check.ours["taken_back"], check.stripe["taken_back"]) == (0, 1000)
    with pytest.raises(CommandError, match="1 statement"):
        call_command(
            "billing_reconcile_statements",
            month=_this_month().strftime("%Y-%m"),
            stdout=StringIO(),
        )


def test_a_disputed_subscription_stays_suspended_until_the_dispute_is_won(flow):
    """The subscription's own events (a renewal paid) do not lift a dispute's suspension; a
    won dispute hands access back to the subscription's status."""
    lic, pi_id = flow.buy(flow.shop.subscription)
    dp = flow.fake.dispute(pi_id)
    flow.deliver()
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.SUSPENDED
    assert Dispute.objects.get().held == 900 - 135
    flow.fake.advance_subscription(lic.creator_subscription.stripe_subscription_id)
    flow.deliver()  # invoice.paid, customer.subscription.updated (active)
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.SUSPENDED
    flow.fake.close_dispute(dp["id"], won=True)
    flow.deliver()
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.ACTIVE


def test_the_month_end_task_compares_every_creator(flow):
    """The beat task runs the same comparison as the command (beat: last month)."""
    from billing.models import StatementReconciliation
    from billing.tasks import creator_statements_reconcile_task

    flow.buy(flow.shop.one_time)
    assert creator_statements_reconcile_task() == 0  # last month: nothing sold, nothing to check
    assert not StatementReconciliation.objects.exists()
    assert creator_statements_reconcile_task(_this_month().strftime("%Y-%m")) == 0
    assert StatementReconciliation.objects.filter(matches=True).count() == 1
