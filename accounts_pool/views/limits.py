"""A lead sets a consumer key's limits, and reads when the key last went over them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import state
from ..forms import KeyLimitsForm
from ..models import ConsumerKey
from ..services.limits import consumer_key_set_limits
from .access import pool_or_404

EVENTS_SHOWN = 20


@login_required
@require_http_methods(["GET", "POST"])
def key_limits(request: HttpRequest, pool: str, key_id: int) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    key = ConsumerKey.objects.filter(pool=found, pk=key_id).first()
    if key is None:
        raise Http404("No such key.")
    current = key.limits
    initial = {
        "requests_per_minute": current.requests_per_minute,
        "tokens_per_5h": current.tokens_per_5h,
        "concurrent_requests": current.concurrent_requests,
        "model_families": list(current.model_families),
    }
    form = KeyLimitsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        consumer_key_set_limits(
            key=key,
            limits=state.KeyLimits(
                requests_per_minute=data["requests_per_minute"],
                tokens_per_5h=data["tokens_per_5h"],
                concurrent_requests=data["concurrent_requests"],
                model_families=tuple(data["model_families"]),
            ),
        )
        messages.success(request, f"Limits of “{key.name}” saved.")
        return redirect("key_limits", pool=found.slug, key_id=key.pk)
    return render(
        request,
        "pages/key_limits.html",
        {
            "team": found.team,
            "pool": found,
            "key": key,
            "form": form,
            "events": key.limit_events.all()[:EVENTS_SHOWN],
        },
    )
