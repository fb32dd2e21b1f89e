"""Indexes for the catalogue's "-updated" and "-published" orderings (PostgreSQL only).

Both orderings put listings without a date last (DESC NULLS LAST, then name), so these indexes
match those ORDER BYs and a page is an index range scan. SQLite (the demo) cannot create an index
with NULLS LAST, and at demo sizes it does not need one.
"""

from django.db import migrations


def _on_postgres(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


CREATE = """
CREATE INDEX IF NOT EXISTS listing_updated_nl
    ON marketplace_listing (upstream_updated_at DESC NULLS LAST, name);
CREATE INDEX IF NOT EXISTS listing_published_nl
    ON marketplace_listing (published_at DESC NULLS LAST, name);
"""
DROP = "DROP INDEX IF EXISTS listing_updated_nl; DROP INDEX IF EXISTS listing_published_nl;"


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0002_search_index")]

    operations = [migrations.RunPython(_on_postgres(CREATE), _on_postgres(DROP))]
