"""Creator-written text stored before it was cleaned on the way in (ab50a13: plan names,
creator display names, the title and description of a listing a creator publishes) is cleaned
now with the same function and bounds (common.text.clean_text), so a bidi override or a control
character stored earlier no longer reaches the page or the API. Registry text was always
cleaned by the sync. Idempotent (only rows whose text changes are written); nothing to undo.

Here, in the top app, because it touches billing's and marketplace's rows.
"""

from django.db import migrations

from common.text import text_rows_reclean


def reclean(apps, schema_editor):  # type: ignore[no-untyped-def]
    creator = apps.get_model("billing", "Creator")
    plan = apps.get_model("billing", "Plan")
    listing = apps.get_model("marketplace", "Listing")
    text_rows_reclean(creator.objects.all(), {"display_name": (100, True)})
    labels = dict(plan._meta.get_field("kind").choices)
    text_rows_reclean(
        plan.objects.all(),
        {"name": (100, True)},
        empty=lambda row, field: str(labels.get(row.kind, "Plan")),  # as plan_create names it
    )
    changed = text_rows_reclean(
        listing.objects.filter(source="creator"),
        {"title": (100, True), "description": (2000, False)},
    )
    if not changed or schema_editor.connection.vendor != "postgresql":
        return
    from django.contrib.postgres.search import SearchVector

    # The full-text vector follows the cleaned text (marketplace.services._search_vector).
    listing.objects.filter(source="creator").update(
        search_vector=SearchVector("name_words", config="simple", weight="A")
        + SearchVector("title", config="english", weight="A")
        + SearchVector("description", config="english", weight="B")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("web", "0001_initial"),
        ("billing", "0007_subscription_changes"),
        ("marketplace", "0007_listing_name_cover"),
    ]

    operations = [migrations.RunPython(reclean, migrations.RunPython.noop)]
