"""Full-text and trigram indexes exist on PostgreSQL only; SQLite (the demo) uses a plain scan."""

from django.db import migrations


def _on_postgres(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


CREATE = (
    "CREATE INDEX IF NOT EXISTS listing_search_gin ON marketplace_listing USING gin (search_vector)"
)
DROP = "DROP INDEX IF EXISTS listing_search_gin"


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]

    operations = [migrations.RunPython(_on_postgres(CREATE), _on_postgres(DROP))]
