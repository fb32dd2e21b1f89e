from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo: seed data and a one-process runner on embedded defaults. Top of the import order."""

    name = "demo"
