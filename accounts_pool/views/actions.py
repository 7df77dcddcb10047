"""Leads' levers on one account, and the pool's consumer keys. Each reports its outcome."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from .. import explain
from ..forms import ConsumerKeyForm, DisableForm
from ..models import ConsumerKey
from ..services import keys, levers
from ..services.quota import QuotaOutcome
from ..services.refresh import RefreshOutcome
from . import shown_once
from .access import account_or_404, actor_of, pool_or_404, signed_in_user

OUTCOME_MESSAGES: dict[RefreshOutcome | QuotaOutcome, str] = {
    RefreshOutcome.REFRESHED: "Tokens refreshed.",
    RefreshOutcome.REFRESHED_ELSEWHERE: "Another worker refreshed the tokens just now.",
    QuotaOutcome.CHECKED: "Quota checked.",
    QuotaOutcome.POLICY_BLOCKED: (
        "The organisation's policy blocks this account (usage endpoint 403)."
    ),
    RefreshOutcome.NEEDS_RELOGIN: "The refresh token was rejected: log in again (Re-login).",
    RefreshOutcome.BACKING_OFF: "It failed less than a minute ago; try again in a minute.",
    QuotaOutcome.NO_VALID_TOKEN: "No valid access token to check quota with (refresh first).",
    # The same value for both operations.
    RefreshOutcome.CREDENTIAL_UNREADABLE: (
        "Its stored credential cannot be decrypted with the configured keys: put the key back "
        "and run manage.py reencrypt, or log in again (Re-login)."
    ),
}
SUCCESSES = (RefreshOutcome.REFRESHED, RefreshOutcome.REFRESHED_ELSEWHERE, QuotaOutcome.CHECKED)


def _report(request: HttpRequest, action: str, outcome: RefreshOutcome | QuotaOutcome) -> None:
    text = OUTCOME_MESSAGES.get(outcome, f"{action}: {outcome.replace('_', ' ')}.")
    (messages.success if outcome in SUCCESSES else messages.warning)(request, text)


@login_required
@require_POST
def account_action(request: HttpRequest, account_id: int, action: str) -> HttpResponse:
    account, _ = account_or_404(request, account_id, lead=True)
    actor = actor_of(request)
    if action == "refresh":
        _report(request, "Refresh", levers.account_refresh_now(account=account, actor=actor))
    elif action == "check-quota":
        _report(
            request, "Quota check", levers.account_check_quota_now(account=account, actor=actor)
        )
    elif action == "clear-backoff":
        waits = explain.clearable_waits(account.state_snapshot(windows=[]), timezone.now())
        if levers.account_clear_backoff(account=account, actor=actor):
            what = " and ".join(waits) or "wait"
            messages.success(request, f"Cleared the {what}: the next cycle uses it at once.")
        else:
            messages.info(request, "Nothing to clear: no backoff or cooldown is running.")
    elif action == "enable":
        levers.account_enable(account=account, actor=actor)
        messages.success(request, "Account enabled.")
    else:
        messages.error(request, "Unknown action.")
    return redirect("account", account_id=account.pk)


@login_required
@require_POST
def account_disable(request: HttpRequest, account_id: int) -> HttpResponse:
    account, _ = account_or_404(request, account_id, lead=True)
    form = DisableForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the account is disabled.")
        return redirect("account", account_id=account.pk)
    levers.account_disable(
        account=account, reason=form.cleaned_data["reason"], actor=actor_of(request)
    )
    messages.success(request, "Account disabled.")
    return redirect("account", account_id=account.pk)


@login_required
@require_http_methods(["GET", "POST"])
def account_delete(request: HttpRequest, account_id: int) -> HttpResponse:
    account, _ = account_or_404(request, account_id, lead=True)
    if request.method == "POST":
        pool_slug, label = account.pool.slug, account.label
        levers.account_delete(account=account)
        messages.success(request, f"Account “{label}” deleted with its history.")
        return redirect("pool", pool=pool_slug)
    return render(
        request,
        "pages/account_delete.html",
        {"account": account, "pool": account.pool, "team": account.pool.team},
    )


@login_required
@require_http_methods(["GET", "POST"])
def consumer_keys(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    form = ConsumerKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        key, secret = keys.consumer_key_create(
            pool=found, name=form.cleaned_data["name"], created_by=signed_in_user(request)
        )
        shown_once.keep(request, f"key:{found.pk}", secret)
        messages.success(request, f"Key “{key.name}” created.")
        return redirect("consumer_keys", pool=found.slug)
    return render(
        request,
        "pages/keys.html",
        {
            "team": found.team,
            "pool": found,
            "form": form,
            "shown_once": shown_once.take(request, f"key:{found.pk}"),
            "keys": ConsumerKey.objects.filter(pool=found).order_by("revoked_at", "name"),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def consumer_key_revoke(request: HttpRequest, pool: str, key_id: int) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    key = ConsumerKey.objects.filter(pool=found, pk=key_id).first()
    if key is None:
        messages.error(request, "No such key.")
    else:
        keys.consumer_key_revoke(key=key)
        messages.success(request, f"Key “{key.name}” revoked.")
    return redirect("consumer_keys", pool=found.slug)
