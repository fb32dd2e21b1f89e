from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo: seed data and a one-process runner. Sits on top of the import order."""

    name = "demo"
