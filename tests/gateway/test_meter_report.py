"""Usage to Stripe Billing Meters (the in-project fake Stripe, real stripe client over HTTP):
reported once with call_id as identifier, resend after a crash not doubled, reconciled."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from billing.stripe_client import get_client
from fakes.stripe.server import FakeStripeServer
from gateway.metering import new_call_id
from gateway.models import UsageEvent
from gateway.services import usage_reconcile, usage_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_stripe(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_gateway_tests"
    with FakeStripeServer(webhook_url=None) as server:
        settings.STRIPE_API_BASE = server.base_url
        yield server


def _event(customer, amount=5, billable=True, when=None):
    return UsageEvent.objects.create(
        call_id=new_call_id(),
        key_id=1,
        license_id=1,
        listing_id=1,
        plan_id=1,
        tool="ok",
        unit_amount=amount if billable else 0,
        currency="usd",
        billable=billable,
        outcome="success" if billable else "tool_error",
        latency_ms=2,
        occurred_at=when or datetime.now(tz=UTC) - timedelta(minutes=5),
        stripe_customer_id=customer,
        meter_event_name="tb_calls_test",
    )


def test_report_once_and_reconcile(fake_stripe):
    client = get_client()
    customer = client.v1.customers.create({"email": "buyer@example.com"}).id
    meter = client.v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "tb_calls_test",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    events = [_event(customer, amount=a) for a in (5, 7, 11)]
    _event(customer, billable=False)
    _event(customer, amount=0)  # an included call: nothing to report
    assert usage_report() == 3
    assert usage_report() == 0
    assert UsageEvent.objects.filter(meter_reported_at__isnull=False).count() == 3
    # A crash after Stripe accepted but before we saved the flag: the resend is deduplicated.
    UsageEvent.objects.filter(pk=events[0].pk).update(meter_reported_at=None)
    assert usage_report() == 1
    stored = fake_stripe.state.meter_events()
    assert sorted(e["identifier"] for e in stored) == sorted(str(e.call_id) for e in events)
    assert sorted(e["payload"]["value"] for e in stored) == ["11", "5", "7"]

    end = datetime.fromtimestamp((int(time.time()) // 60 + 1) * 60, tz=UTC)
    rec = usage_reconcile(
        meter_id=meter.id,
        meter_event_name="tb_calls_test",
        stripe_customer_id=customer,
        start=end - timedelta(hours=1),
        end=end,
    )
    assert (rec.ours, rec.stripe, rec.matches) == (23, 23, True)
    UsageEvent.objects.filter(pk=events[1].pk).update(unit_amount=8)  # drift on our side
    rec = usage_reconcile(
        meter_id=meter.id,
        meter_event_name="tb_calls_test",
        stripe_customer_id=customer,
        start=end - timedelta(hours=1),
        end=end,
    )
    assert rec.matches is False
    assert rec.ours == 24
