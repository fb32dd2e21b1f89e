from django.contrib import admin

from notifications.models import Notification, NotificationOptOut


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: what was sent to whom and when; `sending` rows older than a few minutes are
    the rare at-most-once losses (a worker died mid-send)."""

    list_display = ["created_at", "kind", "recipient", "status", "attempts", "sent_at"]
    list_filter = ["status", "kind"]
    search_fields = ["recipient__email", "event_key"]
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(NotificationOptOut)
class NotificationOptOutAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "kind", "created_at"]
    list_filter = ["kind"]
