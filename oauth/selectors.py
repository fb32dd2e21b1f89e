"""Reads of the authorization server's state for pages."""

from __future__ import annotations

from django.db.models import QuerySet

from oauth.models import Connection


def connection_list_for_license(*, license_id: int) -> QuerySet[Connection]:
    """The clients connected to a license (live first, then the newest), with their key's last
    use (the usage drain records it on the key the connection calls through)."""
    return (
        Connection.objects.filter(key__license_id=license_id)
        .select_related("client", "key")
        .order_by("revoked_at", "-created_at")
    )
