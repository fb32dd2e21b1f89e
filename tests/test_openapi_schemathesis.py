"""Schemathesis against our OpenAPI schema: the listings endpoints never answer 5xx.

Runs in-process through Django's WSGI handler (the same middleware and views as production,
minus the ASGI server), against a small real catalogue in PostgreSQL.
"""

from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from marketplace.services import listings_refresh_from_registry
from registry_sync.models import VersionStatus
from tests.factories import BASE_TIME, ServerVersionFactory, http_remote, npm_package

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def keep_test_connection():
    # Django's WSGI handler closes the DB connection around each request, which would end the
    # test's transaction; the test Client disconnects these handlers for the same reason.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def catalogue(db, keep_test_connection):
    names = []
    for index, status in enumerate(
        [VersionStatus.ACTIVE, VersionStatus.DEPRECATED, VersionStatus.DELETED, VersionStatus.GONE]
    ):
        name = f"io.github.fuzz/server-{index}"
        names.append(name)
        ServerVersionFactory(
            name=name,
            status=status,
            status_message="" if status == VersionStatus.ACTIVE else "a reason",
            description=f"Weather tools number {index} <b>bold</b>",
            published_at=BASE_TIME + timedelta(hours=index),
            remotes=[http_remote()] if index % 2 else [],
            packages=[npm_package()] if index % 2 == 0 else [],
        )
    listings_refresh_from_registry(names=names)
    return names


@schema.include(path_regex=r"^/api/v1/listings").parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_listings_api_never_answers_5xx(case, catalogue):
    if "name" in (case.path_parameters or {}) and len(case.path_parameters["name"]) % 2:
        # Random names are almost always 404; send half of the detail calls to real listings.
        case.path_parameters["name"] = catalogue[len(case.path_parameters["name"]) % 4]

    response = case.call()

    # No 5xx, and every answer matches the documented status codes, content types and bodies.
    # Not `negative_data_rejection`: like most GET APIs we ignore unknown query parameters, and
    # an object-typed mutation of `page` is sent exploded (as other, unknown parameters).
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )
