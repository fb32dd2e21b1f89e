"""Typo-tolerant search: the catalogue's words, trigram-indexed; creator listings get a vector.

`marketplace_search_word` is a materialized view of every lexeme in the listings' search vectors
(names, titles, descriptions) with how many listings hold it. When no word of a query matches,
`listing_search` replaces each word by its closest catalogue word (pg_trgm similarity, GIN
index) and searches again: "githb" becomes "github". A few thousand short words answer in a
millisecond, where trigram similarity against 50,000 names and titles took 300 ms. It is
refreshed after each registry refresh (`marketplace.services.search_words_refresh`). Where
pg_trgm cannot be created (0004 logs it) the view is skipped and search has no typo step.

Listings a creator published before `listing_publish_for_creator` indexed them had no search
vector, so full-text search never found them ("weather" missed the hosted Demo Weather); this
computes it once with the expression `marketplace.services._search_vector` uses.
"""

from django.db import DatabaseError, migrations, transaction

FILL_VECTORS = (
    "UPDATE marketplace_listing SET search_vector = "
    "setweight(to_tsvector('simple', COALESCE(name_words, '')), 'A') || "
    "setweight(to_tsvector('english', COALESCE(title, '')), 'A') || "
    "setweight(to_tsvector('english', COALESCE(description, '')), 'B') "
    "WHERE search_vector IS NULL"
)
CREATE_VIEW = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS marketplace_search_word AS "
    "SELECT word, ndoc FROM ts_stat('SELECT search_vector FROM marketplace_listing') "
    "WHERE length(word) BETWEEN 3 AND 40"
)
CREATE_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS search_word_word ON marketplace_search_word (word)",
    "CREATE INDEX IF NOT EXISTS search_word_trgm ON marketplace_search_word "
    "USING gin (word gin_trgm_ops)",
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FILL_VECTORS)
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError:
        return
    schema_editor.execute(CREATE_VIEW)
    for statement in CREATE_INDEXES:
        schema_editor.execute(statement)
    schema_editor.execute("ANALYZE marketplace_search_word")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS marketplace_search_word")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0005_listing_popularity")]

    operations = [migrations.RunPython(create, drop)]
