"""Adding accounts in the browser: the PKCE login, pasted tokens, an uploaded credentials file,
and invite links that let a member add their own subscription."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .. import selectors
from ..forms import PasteCodeForm, PasteTokensForm, UploadCredentialsForm
from ..models import Account, Pool, PoolInvite
from ..services import invites, onboarding
from ..services.errors import ServiceError
from . import shown_once
from .access import actor_of, pool_or_404

PENDING = "pending_logins"


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _add_context(pool: Pool, **forms: Any) -> dict[str, Any]:
    return {
        "team": pool.team,
        "pool": pool,
        "tokens_form": forms.get("tokens_form") or PasteTokensForm(),
        "file_form": forms.get("file_form") or UploadCredentialsForm(),
        "invite_link": forms.get("invite_link"),
        "invites": invites.invites_outstanding(pool=pool),
    }


@login_required
@require_GET
def add_account(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    link = shown_once.take(request, f"invite:{found.pk}")
    return render(request, "pages/add_account.html", _add_context(found, invite_link=link))


def _outcome_message(request: HttpRequest, result: onboarding.Onboarded) -> None:
    texts = {
        "verified": "checked with the provider and added",
        "reauthorized": "re-authorized: new tokens stored, history kept",
        "policy_blocked": "added, but the organisation's policy blocks it for now",
        "unverified": "added; the provider did not answer, the cycle will retry",
    }
    text = texts.get(result.outcome, result.outcome)
    messages.success(request, f"Account “{result.account.label}” {text}.")


@login_required
@require_POST
def add_by_tokens(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    form = PasteTokensForm(request.POST)
    if form.is_valid():
        try:
            result = onboarding.account_onboard_tokens(
                pool=found,
                label=form.cleaned_data["label"],
                refresh_token=form.cleaned_data["refresh_token"],
                access_token=form.cleaned_data["access_token"] or "",
                expires_at=form.cleaned_data["expires_at"],
                actor=actor_of(request),
            )
        except ServiceError as exc:
            form.add_error("refresh_token", exc.message)
        else:
            _outcome_message(request, result)
            return redirect("account", account_id=result.account.pk)
    return render(
        request, "pages/add_account.html", _add_context(found, tokens_form=form), status=400
    )


@login_required
@require_POST
def add_by_file(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    form = UploadCredentialsForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            created = onboarding.accounts_import(
                pool=found,
                document=form.cleaned_data["file"],
                label=form.cleaned_data["label"],
                actor=actor_of(request),
            )
        except ServiceError as exc:
            form.add_error("file", exc.message)
            for entry in exc.details or []:
                if isinstance(entry, dict):
                    form.add_error("file", f"Entry {entry.get('index')}: {entry.get('error')}")
        else:
            names = ", ".join(f"“{account.label}”" for account in created[:5])
            more = f" and {len(created) - 5} more" if len(created) > 5 else ""
            count = f"{len(created)} account{'s' if len(created) != 1 else ''}"
            now = timezone.now()
            unchecked = sum(
                1 for a in created if not (a.access_expires_at and a.access_expires_at > now)
            )
            checked = len(created) - unchecked
            said = f"{checked} checked with the provider" if checked else ""
            if unchecked:
                said += (", " if said else "") + (
                    f"{unchecked} with only a refresh token stored as given: the cycle checks "
                    "them within a minute, and a dead refresh token then shows as “needs re-login”"
                )
            messages.success(request, f"Imported {count} ({names}{more}): {said}.")
            return redirect("pool", pool=found.slug)
    return render(
        request, "pages/add_account.html", _add_context(found, file_form=form), status=400
    )


# --- PKCE -----------------------------------------------------------------------------------------


def _remember(
    request: HttpRequest, key: str, started: onboarding.LoginStarted, **extra: Any
) -> None:
    pending = request.session.get(PENDING, {})
    pending[key] = {
        "session": started.session,
        "authorize_url": started.authorize_url,
        "expires_at": started.expires_at.isoformat(),
        **extra,
    }
    request.session[PENDING] = pending


def _pending(request: HttpRequest, key: str) -> dict[str, Any] | None:
    value = request.session.get(PENDING, {}).get(key)
    return value if isinstance(value, dict) else None


def _forget(request: HttpRequest, key: str) -> None:
    pending = request.session.get(PENDING, {})
    pending.pop(key, None)
    request.session[PENDING] = pending


@login_required
@require_POST
def login_start(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    account = None
    if chosen := request.POST.get("account_id", ""):  # re-login of an account of this pool
        # 18 digits fit any id column; more would overflow int() or the database, not a 404.
        valid = chosen.isascii() and chosen.isdigit() and len(chosen) <= 18
        account = selectors.pool_account(found, int(chosen)) if valid else None
        if account is None:
            raise Http404("No such account in this pool.")
    started = onboarding.oauth_login_start(pool=found, user=_user(request), account=account)
    _remember(request, f"pool:{found.slug}", started, account_id=account.pk if account else None)
    return redirect("login_complete", pool=found.slug)


@login_required
@require_http_methods(["GET", "POST"])
def login_complete(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    key = f"pool:{found.slug}"
    pending = _pending(request, key)
    if pending is None:
        messages.info(request, "Start a login first.")
        return redirect("add_account", pool=found.slug)
    account_id = pending.get("account_id")
    account = (
        Account.objects.defer(*Account.SECRET_FIELDS).filter(pk=account_id, pool=found).first()
        if account_id
        else None
    )
    form = PasteCodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if account is None and not form.cleaned_data["label"]:
            form.add_error("label", "Give the new account a name.")
        else:
            try:
                result = onboarding.oauth_login_complete(
                    pool=found,
                    session=pending["session"],
                    pasted_code=form.cleaned_data["code"],
                    label=form.cleaned_data["label"],
                    account=account,
                    actor=actor_of(request),
                )
            except ServiceError as exc:
                form.add_error("code", exc.message)
            else:
                _forget(request, key)
                _outcome_message(request, result)
                return redirect("account", account_id=result.account.pk)
    return render(
        request,
        "pages/login.html",
        {
            "team": found.team,
            "pool": found,
            "pending": pending,
            "account": account,
            "form": form,
            "action": reverse("login_complete", kwargs={"pool": found.slug}),
        },
        status=400 if form.errors else 200,
    )


# --- Invites --------------------------------------------------------------------------------------


@login_required
@require_POST
def invite_create(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    _, token = invites.invite_create(pool=found, user=_user(request))
    link = request.build_absolute_uri(reverse("invite", kwargs={"token": token}))
    shown_once.keep(request, f"invite:{found.pk}", link)
    return redirect(reverse("add_account", kwargs={"pool": found.slug}) + "#invite")


@login_required
@require_POST
def invite_revoke(request: HttpRequest, pool: str, invite_id: int) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    invite = PoolInvite.objects.filter(pool=found, pk=invite_id).first()
    if invite is not None and invites.invite_revoke(invite=invite):
        messages.success(request, "Invite link revoked: it can no longer be used.")
    else:
        messages.info(request, "That link was already used, expired or revoked.")
    return redirect(reverse("add_account", kwargs={"pool": found.slug}) + "#invite")


def _open_invite(request: HttpRequest, token: str) -> Any:
    try:
        return invites.invite_open(token=token, user=_user(request))
    except ServiceError as exc:
        if exc.status == 404:
            raise Http404("Not found.") from None
        return render(
            request, "pages/invite_gone.html", {"message": exc.message}, status=exc.status
        )


@login_required
@require_http_methods(["GET", "POST"])
def invite(request: HttpRequest, token: str) -> HttpResponse:
    opened = _open_invite(request, token)
    if isinstance(opened, HttpResponse):
        return opened
    key = f"invite:{opened.pk}"
    pending = _pending(request, key)
    form = PasteCodeForm(request.POST or None)
    if request.method == "POST" and request.POST.get("start"):
        started = invites.invite_login_start(invite=opened, user=_user(request))
        _remember(request, key, started)
        return redirect("invite", token=token)
    if request.method == "POST" and pending is not None and form.is_valid():
        if not form.cleaned_data["label"]:
            form.add_error("label", "Give your account a name.")
        else:
            try:
                result = invites.invite_complete(
                    invite=opened,
                    user=_user(request),
                    session=pending["session"],
                    pasted_code=form.cleaned_data["code"],
                    label=form.cleaned_data["label"],
                )
            except ServiceError as exc:
                form.add_error("code", exc.message)
            else:
                _forget(request, key)
                messages.success(
                    request, f"Thank you: “{result.account.label}” was added to {opened.pool.name}."
                )
                return redirect("pool", pool=opened.pool.slug)
    return render(
        request,
        "pages/invite.html",
        {
            "team": opened.pool.team,
            "pool": opened.pool,
            "invite": opened,
            "pending": pending,
            "form": form,
            "action": reverse("invite", kwargs={"token": token}),
            "now": timezone.now(),
        },
        status=400 if form.errors else 200,
    )
