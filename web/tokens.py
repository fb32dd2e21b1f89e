"""The API tokens page (/me/tokens/): create a personal token for `/api/v1/me/...`, shown once
(the response is `no-store`), see when each was last used, revoke one (with a confirmation
tick box: the form works without JavaScript and the CSP allows no inline script)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from billing.selectors import personal_token_list
from billing.services.tokens import personal_token_create, personal_token_revoke
from common.exceptions import ApplicationError
from web.selectors import site_url

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        label="Token name",
        max_length=100,
        required=False,
        help_text="What uses it, e.g. “nightly usage report”.",
    )


class TokenRevokeForm(forms.Form):
    token = forms.IntegerField()
    confirm = forms.BooleanField(
        label="Yes, revoke it: whatever uses it stops working",
        error_messages={"required": "Tick the box to confirm revoking this token."},
    )


def _action(request: HttpRequest, user: User) -> dict[str, Any]:
    if request.POST.get("action") == "create":
        form = TokenCreateForm(request.POST)
        if not form.is_valid():
            return {"create_form": form, "error": "Check the highlighted field."}
        _token, raw = personal_token_create(user=user, name=form.cleaned_data["name"])
        return {"raw_token": raw, "notice": "New API token created."}
    revoke = TokenRevokeForm(request.POST)
    if not revoke.is_valid():
        first = next(iter(revoke.errors.values()))[0]
        raise ApplicationError(str(first))
    token = personal_token_revoke(user=user, token_id=revoke.cleaned_data["token"])
    return {"notice": f"Token {token.display_prefix}… revoked: it stops working now."}


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    user = cast("User", request.user)
    extra: dict[str, Any] = {}
    status = 200
    if request.method == "POST":
        try:
            extra = _action(request, user)
        except ApplicationError as exc:
            extra = {"error": exc.message}
            status = 400
    context = {
        "tokens": personal_token_list(user=user),
        "create_form": extra.pop("create_form", None) or TokenCreateForm(),
        "api_url": site_url("/api/v1/me/licenses"),
        "docs_url": site_url("/api/docs/"),
        **extra,
    }
    return render(request, "web/tokens.html", context, status=status)
