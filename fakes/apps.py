from django.apps import AppConfig


class FakesConfig(AppConfig):
    """Holds the fakes' management commands; no models, no URLs, nothing run at startup."""

    name = "fakes"
