"""Factories for the gateway's rows."""

import factory
from factory.django import DjangoModelFactory

from gateway.crypto import secret_encrypt
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
