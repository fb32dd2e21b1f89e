from django.urls import path

from notifications import views

app_name = "notifications"

urlpatterns = [
    path("me/notifications/", views.preferences_page, name="preferences"),
]
