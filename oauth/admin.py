"""Admin: who connected which client to which license, and the clients themselves."""

from __future__ import annotations

from django.contrib import admin

from oauth.models import Client, Connection


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "client_id", "kind", "created_at", "fetched_at")
    list_filter = ("kind",)
    search_fields = ("name", "client_id")
    readonly_fields = ("client_id", "kind", "metadata", "created_at", "fetched_at")
    exclude = ("secret_hash",)


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("client", "user", "key", "resource", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("client__name", "user__email", "resource")
    raw_id_fields = ("user", "client", "key")
    readonly_fields = ("created_at",)
