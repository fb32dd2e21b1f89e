"""Trigram index for the search's name fallback (PostgreSQL only).

When full-text search finds nothing, search matches the name by substring
(`UPPER(name) LIKE UPPER('%q%')`, Django's `icontains`); this expression index lets that use an
index instead of scanning every listing. pg_trgm is a trusted extension (PostgreSQL 13+), so a
database owner can create it; where it cannot be created the index is skipped and the fallback
still works, only slower.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

CREATE_INDEX = (
    "CREATE INDEX IF NOT EXISTS listing_name_trgm ON marketplace_listing "
    "USING gin (UPPER(name) gin_trgm_ops)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError:
        logger.warning("listing_name_trgm_skipped", extra={"reason": "pg_trgm unavailable"})
        return
    schema_editor.execute(CREATE_INDEX)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS listing_name_trgm")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0003_listing_order_indexes")]

    operations = [migrations.RunPython(create, drop)]
