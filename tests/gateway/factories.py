"""Factories for the gateway's rows."""

from types import SimpleNamespace
from typing import Any

import factory
from factory.django import DjangoModelFactory

from gateway.crypto import secret_encrypt
from gateway.metering import new_call_id, usage_record
from gateway.models import HostedUpstream
from tests.factories import ListingFactory


class HostedUpstreamFactory(DjangoModelFactory):
    class Meta:
        model = HostedUpstream

    class Params:
        secret = ""

    listing = factory.SubFactory(ListingFactory)
    url = "http://127.0.0.1:18510/mcp"
    secret_encrypted = factory.LazyAttribute(lambda o: secret_encrypt(o.secret))


def finished_call(
    *, customer: str, meter: str, at: float, amount: int, billable: bool = True
) -> dict[str, Any]:
    """A finished call as the usage stream carries it (gateway.metering.usage_record's shape)."""
    return usage_record(
        call_id=str(new_call_id()),
        ent=SimpleNamespace(
            key_id=1,
            license_id=1,
            listing_id=1,
            plan_id=1,
            currency="usd",
            stripe_customer_id=customer,
            meter_event_name=meter,
        ),
        tool="ok",
        amount=amount,
        billable=billable,
        outcome="success" if billable else "tool_error",
        latency_ms=2,
        occurred_at=at,
    )
