"""Template helpers for catalogue pages. Nothing here marks text safe: autoescape stays on."""

from urllib.parse import urlsplit

from django import template

register = template.Library()


@register.filter
def http_url(value: object) -> str:
    """The value if it is an absolute http(s) URL, else "" (`javascript:` never becomes a link)."""
    if not isinstance(value, str):
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return value


@register.filter
def facet_list(value: object) -> list[str]:
    """`",npm,pypi,"` -> `["npm", "pypi"]`."""
    if not isinstance(value, str):
        return []
    return [token for token in value.split(",") if token]
