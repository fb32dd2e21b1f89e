"""A covering index for counting a browse of the catalogue with filters (PostgreSQL only).

Browsing without a query counts exactly (`marketplace.pagination.ExactCountPaginator`). With a
facet filter (`transport`, `package_type`, `price_model`) that COUNT read the whole table (wide
rows: descriptions and search vectors), ~20 ms at 50,000 listings; over this narrow index it is
an index-only scan, ~5 ms. The filters' columns are small (flags and ",npm,"-style tokens).
"""

from django.db import migrations

CREATE = (
    "CREATE INDEX IF NOT EXISTS listing_facets_cover ON marketplace_listing (status) "
    "INCLUDE (has_remote, has_package, package_types, price_models)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS listing_facets_cover")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0007_listing_name_cover")]

    operations = [migrations.RunPython(create, drop)]
