"""Usage to Stripe Billing Meters (the in-project fake Stripe, real stripe client over HTTP):
one meter event per customer, meter and minute; corrections for late calls; a resend after a
crash not doubled; what Stripe refuses for good parked alone; transient failures retried with
the same identifier; reconciled."""

import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction

from billing.stripe_client import get_client
from fakes.stripe.server import FakeStripeServer
from gateway.models import MeterReport, MeterReportStatus, UsageEvent
from gateway.services import (
    meter_reports_seal,
    usage_events_write,
    usage_reconcile,
    usage_report,
)
from tests.gateway.factories import finished_call

pytestmark = pytest.mark.django_db
METER = "tb_calls_test"


@pytest.fixture
def fake_stripe(settings: Any) -> Iterator[FakeStripeServer]:
    settings.STRIPE_SECRET_KEY = "sk_test_gateway_tests"
    with FakeStripeServer(webhook_url=None) as server:
        settings.STRIPE_API_BASE = server.base_url
        yield server


@pytest.fixture
def meter(fake_stripe: FakeStripeServer) -> Any:
    return get_client().v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": METER,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def _customer() -> str:
    return str(get_client().v1.customers.create({"email": "buyer@example.com"}).id)


def _minute(minutes_ago: int) -> datetime:
    now = datetime.now(tz=UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes_ago)


def _calls(customer: str, when: datetime, amounts: list[int], **extra: Any) -> list[dict[str, Any]]:
    """Write calls through the drain's writer (as the usage stream would); returns them."""
    records = [
        finished_call(
            customer=customer,
            meter=extra.get("meter", METER),
            at=(when + timedelta(seconds=i % 60)).timestamp(),
            amount=amount,
            billable=extra.get("billable", True),
        )
        for i, amount in enumerate(amounts)
    ]
    usage_events_write(records=records)
    return records


def _stripe_total(fake: FakeStripeServer, customer: str) -> float:
    return sum(e["_value"] for e in fake.state.meter_events() if e["_customer"] == customer)


def test_one_event_per_customer_and_minute(fake_stripe, meter):
    a, b = _customer(), _customer()
    _calls(a, _minute(3), [5, 7, 11])
    _calls(a, _minute(2), [2] * 50)
    _calls(b, _minute(3), [3, 3])
    _calls(a, _minute(3), [0, 0])  # included calls: nothing to report
    _calls(a, _minute(3), [0], billable=False)
    run = usage_report()
    assert (run.sealed, run.sent, run.parked) == (3, 3, 0)
    stored = fake_stripe.state.meter_events()
    assert sorted(e["payload"]["value"] for e in stored) == ["100", "23", "6"]
    assert {e["timestamp"] % 60 for e in stored} == {0}  # the minute's start
    assert len({e["identifier"] for e in stored}) == 3
    assert usage_report().sent == 0  # nothing twice
    assert _stripe_total(fake_stripe, a) == 123
    assert _stripe_total(fake_stripe, b) == 6
    # Every billable call belongs to exactly one sent report, and the sums agree.
    assert not UsageEvent.objects.filter(unit_amount__gt=0, meter_report__isnull=True).exists()
    for report in MeterReport.objects.all():
        assert report.value == sum(u.unit_amount for u in report.usage.all())


def test_a_minute_is_sealed_only_after_its_grace(fake_stripe, meter):
    customer = _customer()
    now = datetime.now(tz=UTC)
    _calls(customer, now.replace(second=0, microsecond=0), [5])
    assert usage_report(now=now).sent == 0
    assert MeterReport.objects.get().status == MeterReportStatus.OPEN
    later = now.replace(second=0, microsecond=0) + timedelta(seconds=75)
    assert meter_reports_seal(now=later) == 1


def test_a_late_call_goes_out_as_a_correction(fake_stripe, meter):
    customer = _customer()
    minute = _minute(5)
    first = _calls(customer, minute, [5, 5])
    assert usage_report().sent == 1
    _calls(customer, minute, [7])  # reached the ledger after its minute was sent
    _calls(customer, minute, [5])
    usage_events_write(records=first[:1])  # redelivered: in the ledger already
    assert usage_report().sent == 1
    reports = list(MeterReport.objects.order_by("pk"))
    assert [(r.value, r.calls, r.status) for r in reports] == [(10, 2, "sent"), (12, 2, "sent")]
    assert reports[0].window_start == reports[1].window_start
    assert reports[0].identifier != reports[1].identifier
    assert _stripe_total(fake_stripe, customer) == 22
    ledger = sum(UsageEvent.objects.filter(billable=True).values_list("unit_amount", flat=True))
    assert ledger == 22


def test_resend_after_a_crash_is_not_doubled(fake_stripe, meter):
    customer = _customer()
    _calls(customer, _minute(4), [5, 7])
    assert usage_report().sent == 1
    # A crash after Stripe accepted but before we saved "sent": the resend is deduplicated.
    MeterReport.objects.update(status=MeterReportStatus.PENDING, sent_at=None)
    assert usage_report().sent == 1
    assert len(fake_stripe.state.meter_events()) == 1
    assert _stripe_total(fake_stripe, customer) == 12


def test_refused_records_are_parked_alone(fake_stripe, meter, caplog):
    good = _customer()
    _calls("cus_gone", _minute(6), [5])  # a customer Stripe does not know (deleted)
    _calls(good, _minute(6), [5])
    _calls(good, _minute(36 * 24 * 60), [9])  # older than Stripe's 35 days
    _calls(good, _minute(5), [4], meter="tb_calls_inactive")  # no active meter
    _calls(good, _minute(4), [6])
    with caplog.at_level("ERROR", logger="gateway.services"):
        run = usage_report()
    assert (run.sent, run.parked) == (2, 3)
    parked = MeterReport.objects.filter(status=MeterReportStatus.PARKED)
    assert sorted(p.value for p in parked) == [4, 5, 9]
    assert all(p.last_error and p.parked_at for p in parked)
    assert _stripe_total(fake_stripe, good) == 11
    assert caplog.text.count("gateway.meter_report_parked") == 3
    # Later calls keep flowing: a parked record never blocks the others.
    _calls(good, _minute(3), [8])
    assert usage_report().sent == 1
    assert _stripe_total(fake_stripe, good) == 19


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Stripe answering 429 with Retry-After to every request."""

    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": {"type": "invalid_request_error", "message": "Too many requests"}}'
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "120")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_transient_failure_retries_later_with_the_same_identifier(settings, fake_stripe, meter):
    customer = _customer()
    _calls(customer, _minute(4), [5])
    _calls(customer, _minute(3), [6])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_port}"
    settings.STRIPE_TIMEOUT_SECONDS = 2
    try:
        before = datetime.now(tz=UTC)
        run = usage_report()
    finally:
        server.shutdown()
    assert (run.sent, run.parked, run.stopped) == (0, 0, "RateLimitError")
    reports = list(MeterReport.objects.order_by("window_start"))
    assert all(r.status == MeterReportStatus.PENDING for r in reports)
    identifiers = [r.identifier for r in reports]
    retried = [r for r in reports if r.attempts]
    assert retried
    assert all(r.next_attempt_at >= before + timedelta(seconds=119) for r in retried)
    settings.STRIPE_API_BASE = fake_stripe.base_url
    assert usage_report().sent == 2 - len(retried)  # the backed-off ones wait their turn
    assert usage_report(now=datetime.now(tz=UTC) + timedelta(seconds=121)).sent == len(retried)
    stored = sorted(e["identifier"] for e in fake_stripe.state.meter_events())
    assert stored == sorted(identifiers)


@pytest.mark.django_db(transaction=True)
def test_seal_waits_for_a_drain_that_has_not_committed(fake_stripe, meter):
    """A drain that attached calls to a minute's report and has not committed yet: the seal
    waits for it and sums its calls too; a drain after the seal opens a correction."""
    customer = _customer()
    minute = _minute(3)
    _calls(customer, minute, [1])
    attached = threading.Event()

    def slow_drain() -> None:
        with transaction.atomic():
            _calls(customer, minute, [10, 10])
            attached.set()
            time.sleep(1.0)
        connection.close()

    drain = threading.Thread(target=slow_drain)
    drain.start()
    assert attached.wait(5)
    sealed_at = time.monotonic()
    assert meter_reports_seal(now=datetime.now(tz=UTC)) == 1
    assert time.monotonic() - sealed_at > 0.5  # it waited for the drain's commit
    drain.join()
    report = MeterReport.objects.get()
    assert (report.value, report.calls, report.status) == (21, 3, "pending")
    _calls(customer, minute, [4])
    assert MeterReport.objects.filter(status="open").get().window_start == minute


def test_reconcile_compares_sent_minutes_with_stripe(fake_stripe, meter):
    customer = _customer()
    _calls(customer, _minute(5), [5, 7, 11])
    usage_report()
    end = datetime.fromtimestamp((int(time.time()) // 60 + 1) * 60, tz=UTC)
    kwargs = {
        "meter_id": meter.id,
        "meter_event_name": METER,
        "stripe_customer_id": customer,
        "start": end - timedelta(hours=1),
        "end": end,
    }
    rec = usage_reconcile(**kwargs)
    assert (rec.ours, rec.stripe, rec.matches) == (23, 23, True)
    MeterReport.objects.update(value=24)  # drift on our side
    rec = usage_reconcile(**kwargs)
    assert (rec.ours, rec.stripe, rec.matches) == (24, 23, False)


def test_admin_lists_parked_reports_and_sends_them_again(fake_stripe, meter, admin_client):
    customer = _customer()
    _calls(customer, _minute(5), [4], meter="tb_calls_later")  # its meter does not exist yet
    _calls(customer, _minute(36 * 24 * 60), [9])  # too old: stays parked
    assert usage_report().parked == 2
    page = admin_client.get("/admin/gateway/meterreport/?status__exact=parked")
    assert page.status_code == 200
    assert b"No active meter found" in page.content
    get_client().v1.billing.meters.create(
        {
            "display_name": "later",
            "event_name": "tb_calls_later",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    ids = [str(pk) for pk in MeterReport.objects.values_list("pk", flat=True)]
    admin_client.post("/admin/gateway/meterreport/", {"action": "unpark", "_selected_action": ids})
    assert usage_report().sent == 1
    assert _stripe_total(fake_stripe, customer) == 4
    assert MeterReport.objects.get(value=9).status == MeterReportStatus.PARKED
