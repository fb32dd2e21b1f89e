"""The signed-in person's notification settings: which optional emails they get."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from notifications import selectors
from notifications.services import notification_preferences_set


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def preferences_page(request: HttpRequest) -> HttpResponse:
    """Checkboxes for the optional kinds (creators also see the creator ones); the kinds that
    cannot be turned off are listed as always sent."""
    if request.method == "POST":
        wanted = {str(k) for k in request.POST.getlist("kinds")}
        notification_preferences_set(user=request.user, enabled_kinds=wanted)
        messages.success(request, "Notification settings saved.")
        return redirect("notifications:preferences")
    groups = selectors.notification_preferences_get(
        user=request.user, is_creator=hasattr(request.user, "creator")
    )
    recent = selectors.notifications_recent_for(user=request.user)
    return render(request, "notifications/preferences.html", {"groups": groups, "recent": recent})
