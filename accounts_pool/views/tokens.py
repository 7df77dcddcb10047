"""A person's own API tokens: create (shown once), list with expiry and last use, revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from ..forms import ApiTokenForm
from ..services import keys
from .access import signed_in_user


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    form = ApiTokenForm(request.POST or None)
    shown_once = None
    if request.method == "POST" and form.is_valid():
        _, shown_once = keys.api_token_create(
            user=user, name=form.cleaned_data["name"], days=form.cleaned_data["expires_in_days"]
        )
        form = ApiTokenForm()
    return render(
        request,
        "pages/tokens.html",
        {
            "form": form,
            "shown_once": shown_once,
            "tokens": keys.api_tokens_of(user),
            "now": timezone.now(),
        },
    )


@login_required
@require_POST
def api_token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    if keys.api_token_revoke(user=signed_in_user(request), token_id=token_id):
        messages.success(request, "Token revoked.")
    else:
        messages.error(request, "No such token.")
    return redirect("api_tokens")
