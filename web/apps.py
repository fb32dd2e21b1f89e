from django.apps import AppConfig


class WebConfig(AppConfig):
    """The agents' surfaces (llms.txt, markdown listings, the MCP catalogue) on top of every app."""

    name = "web"
    verbose_name = "Agent surfaces"
