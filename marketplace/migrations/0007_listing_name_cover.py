"""A covering index for deep pages of the catalogue in name order (PostgreSQL only).

Browsing without a query orders by name; page 400 of 100 skips 39,900 rows. With the status
(the default filter hides deleted and gone) and the id in the index, the pagination's id-only
query (`marketplace.pagination`, deferred join) is an index-only scan, ~10 ms instead of ~25 ms
at 50,000 listings, and only the page's 100 rows are read from the table.
"""

from django.db import migrations

CREATE = (
    "CREATE INDEX IF NOT EXISTS listing_name_cover ON marketplace_listing (name) "
    "INCLUDE (status, id)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS listing_name_cover")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0006_search_words")]

    operations = [migrations.RunPython(create, drop)]
