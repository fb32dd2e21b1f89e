"""factory_boy factories for the mirror."""

import hashlib
import json

import factory
from django.utils import timezone

from registry_sync.models import ServerVersion, SyncAlert, VersionStatus

OFFICIAL = "io.modelcontextprotocol.registry/official"


def _raw(obj: ServerVersion) -> dict:
    return {
        "server": {
            "name": obj.name,
            "description": f"{obj.name} test server",
            "version": obj.version,
        },
        "_meta": {OFFICIAL: {"status": obj.status, "isLatest": obj.is_latest}},
    }


class ServerVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ServerVersion

    name = factory.Sequence(lambda n: f"io.github.factory/server-{n}")
    version = "1.0.0"
    status = VersionStatus.ACTIVE
    is_latest = True
    published_at = factory.LazyFunction(timezone.now)
    upstream_updated_at = factory.LazyFunction(timezone.now)
    raw = factory.LazyAttribute(_raw)
    content_hash = factory.LazyAttribute(
        lambda o: hashlib.sha256(json.dumps(o.raw, sort_keys=True).encode()).hexdigest()
    )


class SyncAlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SyncAlert

    kind = "paid_listing_vanished"
    name = factory.Sequence(lambda n: f"io.github.factory/alerted-{n}")
    message = "test alert"
