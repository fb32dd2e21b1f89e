"""Reads of the mirror, for this app and the apps above it."""

from django.db.models import QuerySet

from registry_sync.models import ServerVersion


def server_versions_for_name(*, name: str) -> QuerySet[ServerVersion]:
    """Every mirrored version of one server (case-sensitive name), newest publish first."""
    return ServerVersion.objects.filter(name=name).order_by("-published_at", "-version")


def server_latest_versions(*, names: list[str]) -> QuerySet[ServerVersion]:
    """The latest version row of each given name (at most one per name)."""
    return ServerVersion.objects.filter(name__in=names, is_latest=True)


def server_versions_for_names(*, names: list[str]) -> QuerySet[ServerVersion]:
    """Every mirrored version of many servers at once (for batch readers such as the catalogue)."""
    return ServerVersion.objects.filter(name__in=names)
