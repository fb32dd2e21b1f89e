"""Licenses and keys: key format and storage, rotation overlap, revocation, history, caching."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import keys
from billing.models import ApiKey, LicenseEvent, LicenseStatus
from billing.pricing import REFUSED_TOOL, CallPrice, advertised_price, call_price
from billing.selectors import entitlement_get_by_key_hash
from billing.services.licenses import (
    ENTITLEMENT_CACHE_PREFIX,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    keys_mark_used,
    license_revoke,
    license_set_status,
)
from common.exceptions import ApplicationError
from tests.billing.factories import LicenseFactory, MeteredLicenseFactory

pytestmark = pytest.mark.django_db


def test_key_is_shown_once_and_stored_only_as_hmac_and_prefix():
    lic = LicenseFactory()
    key, raw = api_key_create(license=lic, name="ci")
    assert raw.startswith("tb_test_")
    assert len(raw) == keys.KEY_LENGTH
    assert keys.key_is_well_formed(raw)
    assert key.key_hash == keys.key_hash(raw)
    assert key.display_prefix == raw[: keys.DISPLAY_PREFIX_LENGTH]
    stored = ApiKey.objects.filter(pk=key.pk).values()[0]
    assert raw not in [str(v) for v in stored.values()]
    # A one-character typo fails the checksum before any lookup.
    typo = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert not keys.key_is_well_formed(typo)


def test_entitlement_is_one_query_and_carries_the_plan(django_assert_num_queries):
    lic = MeteredLicenseFactory(
        plan_price__per_call_amount=7,
        plan_price__tool_prices={
            "free_tool": {"unit_amount": 0, "excluded": False},
            "hidden": {"unit_amount": 0, "excluded": True},
        },
        creator_subscription__stripe_customer_id="cus_ent",
    )
    key, raw = api_key_create(license=lic, daily_spend_cap=500)
    with django_assert_num_queries(1):
        ent = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw))
    assert ent is not None
    assert (ent.key_id, ent.license_id, ent.plan_kind) == (key.pk, lic.pk, "per_call")
    assert ent.listing_name == lic.listing.name
    assert call_price(ent, "anything", 0) == CallPrice(7)
    assert call_price(ent, "free_tool", 0) == CallPrice(0)
    assert call_price(ent, "hidden", 0).refused == REFUSED_TOOL
    assert ent.daily_spend_cap == 500
    assert ent.rate_limit_per_minute == 60
    assert (ent.stripe_customer_id, ent.meter_event_name) == ("cus_ent", lic.plan.meter_event_name)


def test_a_grant_with_nothing_to_bill_costs_nothing():
    """A priced plan's license without a Stripe customer (a grant): a charge would be shown on
    the receipt and in the ledger and never collected, so every call costs 0."""
    lic = LicenseFactory(
        plan_price__per_call_amount=7,
        plan_price__tool_prices={"dear": {"unit_amount": 9, "excluded": False}},
    )
    _key, raw = api_key_create(license=lic)
    ent = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw))
    assert ent is not None
    assert ent.stripe_customer_id is None
    assert call_price(ent, "anything", 0) == CallPrice(0)
    assert call_price(ent, "dear", 10) == CallPrice(0)
    assert advertised_price(ent, "dear").unit_amount == 0


def test_unknown_revoked_expired_and_unusable_keys_have_no_entitlement():
    lic = LicenseFactory()
    key, raw = api_key_create(license=lic)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw + "x")) is None
    api_key_revoke(key_id=key.pk)
    assert entitlement_get_by_key_hash(key_hash=key.key_hash) is None

    other, _raw2 = api_key_create(license=lic, expires_at=timezone.now() + timedelta(seconds=60))
    assert entitlement_get_by_key_hash(key_hash=other.key_hash) is not None
    ApiKey.objects.filter(pk=other.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert entitlement_get_by_key_hash(key_hash=other.key_hash) is None

    third, _ = api_key_create(license=lic)
    license_revoke(license_id=lic.pk, reason="test")
    assert entitlement_get_by_key_hash(key_hash=third.key_hash) is None


def test_past_due_keeps_access_only_within_grace(settings):
    settings.BILLING_PAST_DUE_GRACE_DAYS = 3
    lic = LicenseFactory(status=LicenseStatus.PAST_DUE)
    key, _ = api_key_create(license=lic)
    ent = entitlement_get_by_key_hash(key_hash=key.key_hash)
    assert ent is not None
    assert ent.status == "active"
    lic.status_changed_at = timezone.now() - timedelta(days=4)
    lic.save(update_fields=["status_changed_at"])
    assert entitlement_get_by_key_hash(key_hash=key.key_hash) is None


def test_rotate_keeps_old_key_for_the_overlap_then_it_stops():
    lic = LicenseFactory()
    old, _ = api_key_create(license=lic, name="prod", monthly_spend_cap=900)
    new, raw_new = api_key_rotate(key_id=old.pk, overlap=timedelta(hours=24))
    old.refresh_from_db()
    assert new.rotated_from_id == old.pk
    assert (new.name, new.monthly_spend_cap) == ("prod", 900)
    assert new.key_hash == keys.key_hash(raw_new)
    assert timedelta(hours=23) < old.expires_at - timezone.now() <= timedelta(hours=24)
    ent_old = entitlement_get_by_key_hash(key_hash=old.key_hash)
    assert ent_old is not None
    assert ent_old.expires_at == pytest.approx(old.expires_at.timestamp())
    assert entitlement_get_by_key_hash(key_hash=new.key_hash).expires_at is None
    with pytest.raises(ApplicationError):
        api_key_rotate(key_id=old.pk)  # one successor per key
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert entitlement_get_by_key_hash(key_hash=old.key_hash) is None
    assert entitlement_get_by_key_hash(key_hash=new.key_hash) is not None


def test_status_history_is_appended_and_terminal_states_stick():
    lic = LicenseFactory()
    LicenseEvent.objects.create(license=lic, to_status="active", reason="issued")
    assert license_set_status(license=lic, to_status=LicenseStatus.PAST_DUE, reason="dunning")
    assert not license_set_status(license=lic, to_status=LicenseStatus.PAST_DUE, reason="again")
    license_revoke(license_id=lic.pk, reason="refund")
    lic.refresh_from_db()
    assert not license_set_status(license=lic, to_status=LicenseStatus.ACTIVE, reason="late event")
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.REVOKED
    assert list(lic.events.values_list("from_status", "to_status")) == [
        ("", "active"),
        ("active", "past_due"),
        ("past_due", "revoked"),
    ]


def test_keys_mark_used_only_moves_forward():
    lic = LicenseFactory()
    a, _ = api_key_create(license=lic)
    b, _ = api_key_create(license=lic)
    t1 = timezone.now()
    t0 = t1 - timedelta(minutes=5)
    keys_mark_used(last_used={a.pk: t1, b.pk: t0})
    keys_mark_used(last_used={a.pk: t0})  # a late, older batch
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.last_used_at, b.last_used_at) == (t1, t0)


def test_cache_entry_is_deleted_on_commit_when_a_key_changes(
    redis_client, django_capture_on_commit_callbacks
):
    lic = LicenseFactory()
    key, _ = api_key_create(license=lic)
    cache_key = ENTITLEMENT_CACHE_PREFIX + key.key_hash
    redis_client.set(cache_key, b"{}")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        api_key_revoke(key_id=key.pk)
    assert redis_client.exists(cache_key)  # not before commit
    for callback in callbacks:
        callback()
    assert not redis_client.exists(cache_key)

    key2, _ = api_key_create(license=lic)
    redis_client.set(ENTITLEMENT_CACHE_PREFIX + key2.key_hash, b"{}")
    with django_capture_on_commit_callbacks(execute=True):
        license_set_status(license=lic, to_status=LicenseStatus.SUSPENDED, reason="dispute")
    assert not redis_client.exists(ENTITLEMENT_CACHE_PREFIX + key2.key_hash)
