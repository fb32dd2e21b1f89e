"""`{% license_connections license %}`: the license page's connected OAuth clients, so the
page's view does not have to know about OAuth."""

from __future__ import annotations

from typing import Any

from django import template

from oauth.selectors import connection_list_for_license

register = template.Library()


@register.inclusion_tag("web/_connections.html", takes_context=True)
def license_connections(context: template.Context, license: Any) -> dict[str, Any]:
    rows = list(connection_list_for_license(license_id=license.pk)[:50])
    return {"license": license, "connections": rows, "request": context.get("request")}
