"""Bringing accounts in: tokens checked with the provider, the PKCE login, and file imports.

Provider calls happen before any write and outside transactions; what the provider answered is
recorded through the refresh and quota services, so each field group keeps its one writer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .. import state
from ..crypto import fingerprint
from ..models import Account, OAuthLogin, Pool
from ..providers import anthropic
from .errors import Conflict, Invalid, ProviderRefused, ServiceError
from .events import event_record
from .keys import secret_hash
from .quota import QuotaOutcome, account_check_quota, quota_record_failure, quota_record_usage
from .refresh import refresh_record_failure, refresh_state_cleared

LOGIN_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Onboarded:
    account: Account
    outcome: state.OnboardingOutcome


def _onboard_event(account: Account, now: datetime, outcome: str, message: str, actor: str) -> None:
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.ONBOARDING,
        outcome=outcome,
        message=message,
        actor=actor,
    )


def _refuse_duplicate(pool: Pool, account_uuid: str, *, keep: Account | None = None) -> None:
    if not account_uuid:
        return
    taken = Account.objects.filter(pool__team=pool.team_id, provider_account_uuid=account_uuid)
    if keep is not None:
        taken = taken.exclude(pk=keep.pk)
    existing = taken.first()
    if existing is not None:
        raise Conflict(
            f"This provider account is already in the team as “{existing.label}”.",
            code="duplicate_account",
            details={"account_id": existing.pk},
        )


def _refused(failure: state.TokenFailure | state.QuotaFailure, what: str) -> ProviderRefused:
    return ProviderRefused(
        f"The provider refused the {what}: {failure.message or failure.kind.value}",
        details={
            "provider_status": failure.status,
            "provider_error": failure.error_code,
            "provider_message": failure.message,
        },
    )


def _create(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str,
    expires_at: datetime | None,
    identity: dict[str, str],
    actor: str,
    now: datetime,
    how: str,
    refreshed: bool = False,
) -> Account:
    with transaction.atomic():
        account = Account.objects.create(
            pool=pool,
            label=label,
            kind=Account.Kind.OAUTH,
            refresh_token=refresh_token,
            refresh_token_fingerprint=fingerprint(refresh_token),
            **_access_fields(access_token, expires_at),
            last_refreshed_at=now if refreshed else None,  # tokens fresh from the provider
            credential_version=1,
            **identity,
        )
        _onboard_event(account, now, "created", f"OAuth account added ({how})", actor)
    return account


def account_create_oauth(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    actor: str,
    now: datetime | None = None,
) -> Account:
    """Store an OAuth account's tokens as given, unchecked (the admin form, imports): the cycle
    refreshes it at once when it has no access token."""
    if not refresh_token:
        raise Invalid("A refresh token is required.")
    return _create(
        pool=pool,
        label=label,
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        identity={},
        actor=actor,
        now=now or timezone.now(),
        how="unchecked",
    )


def _onboard_with_access_token(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str,
    expires_at: datetime,
    actor: str,
    now: datetime,
) -> Onboarded:
    usage: anthropic.Usage | None = None
    failure: state.QuotaFailure | None = None
    identity: dict[str, str] = {}
    with anthropic.client() as provider:
        try:
            usage = provider.usage(access_token)
        except anthropic.UsageEndpointError as exc:
            failure = exc.failure
            if state.onboarding_usage_outcome(failure) == state.OnboardingOutcome.REFUSED:
                raise _refused(failure, "access token") from None
        try:
            profile = provider.profile(access_token)
            identity = profile.identity()
        except anthropic.ProfileEndpointError:
            pass  # identity stays empty; the next refresh answer may fill it
    _refuse_duplicate(pool, identity.get("provider_account_uuid", ""))
    account = _create(
        pool=pool,
        label=label,
        refresh_token=refresh_token,
        access_token=access_token,
        expires_at=expires_at,
        identity=identity,
        actor=actor,
        now=now,
        how="access token checked",
    )
    if usage is not None:
        quota_record_usage(account, usage, now, actor)
        return Onboarded(account, state.OnboardingOutcome.VERIFIED)
    assert failure is not None
    quota_record_failure(account, failure, now, actor)
    return Onboarded(account, state.onboarding_usage_outcome(failure))


def _onboard_by_refresh(
    *, pool: Pool, label: str, refresh_token: str, actor: str, now: datetime
) -> Onboarded:
    try:
        with anthropic.client() as provider:
            grant = provider.refresh(refresh_token)
    except anthropic.TokenEndpointError as exc:
        if state.onboarding_token_outcome(exc.failure) == state.OnboardingOutcome.REFUSED:
            raise _refused(exc.failure, "refresh token") from None
        account = _create(
            pool=pool,
            label=label,
            refresh_token=refresh_token,
            access_token="",
            expires_at=None,
            identity={},
            actor=actor,
            now=now,
            how="unchecked: provider busy",
        )
        refresh_record_failure(account, exc.failure, now, actor)
        return Onboarded(account, state.OnboardingOutcome.UNVERIFIED)
    _refuse_duplicate(pool, grant.account_uuid)
    account = _create(
        pool=pool,
        label=label,
        refresh_token=grant.refresh_token or refresh_token,
        access_token=grant.access_token,
        expires_at=now + grant.expires_in,
        identity=grant.identity(),
        actor=actor,
        now=now,
        how="refresh",
        refreshed=True,
    )
    return _with_first_quota_check(account, actor)


def _with_first_quota_check(account: Account, actor: str) -> Onboarded:
    """Poll the new account's quota at once, so it is usable (or says why not) right away
    instead of after the next cycle."""
    checked = account_check_quota(account_id=account.pk, force=True, actor=actor)
    outcome = (
        state.OnboardingOutcome.POLICY_BLOCKED
        if checked.outcome == QuotaOutcome.POLICY_BLOCKED
        else state.OnboardingOutcome.VERIFIED
    )
    return Onboarded(Account.objects.get(pk=account.pk), outcome)


def account_onboard_tokens(
    *,
    pool: Pool,
    label: str,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    actor: str,
    now: datetime | None = None,
) -> Onboarded:
    """Onboard an OAuth account from tokens, checked with the provider first.

    With an unexpired access token the usage endpoint checks it; without one a refresh does (and
    its rotated tokens are what gets stored). A dead refresh token or a rejected access token is
    refused and nothing is saved; a policy 403 onboards the account as blocked; a transient
    failure onboards it and leaves the retry to the cycle."""
    now = now or timezone.now()
    if access_token and expires_at is not None and expires_at > now:
        return _onboard_with_access_token(
            pool=pool,
            label=label,
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
            actor=actor,
            now=now,
        )
    return _onboard_by_refresh(
        pool=pool, label=label, refresh_token=refresh_token, actor=actor, now=now
    )


def account_create_api_key(
    *,
    pool: Pool,
    label: str,
    api_key: str,
    base_url: str = "",
    actor: str,
    now: datetime | None = None,
) -> Account:
    """Store a plain API key (no refresh, no quota polling; reports still cool it down)."""
    now = now or timezone.now()
    with transaction.atomic():
        account = Account.objects.create(
            pool=pool,
            label=label,
            kind=Account.Kind.API_KEY,
            api_key=api_key,
            base_url=base_url,
            credential_version=1,
        )
        _onboard_event(account, now, "created", "API-key account added", actor)
    return account


def _access_fields(access_token: str, expires_at: datetime | None) -> dict[str, object]:
    """An access token is stored with its expiry or not at all (state_snapshot relies on it)."""
    if access_token and expires_at:
        return {"access_token": access_token, "access_expires_at": expires_at}
    return {"access_token": "", "access_expires_at": None}


def account_store_tokens(
    *,
    account: Account,
    refresh_token: str,
    access_token: str = "",
    expires_at: datetime | None = None,
    identity: dict[str, str] | None = None,
    actor: str,
    now: datetime | None = None,
) -> None:
    """Re-login: new tokens for an existing account. A new refresh token clears needs-re-login
    and the refresh backoff; the history is kept."""
    now = now or timezone.now()
    Account.objects.filter(pk=account.pk).update(
        refresh_token=refresh_token,
        refresh_token_fingerprint=fingerprint(refresh_token),
        **_access_fields(access_token, expires_at),
        **refresh_state_cleared(),
        credential_version=F("credential_version") + 1,
        **{k: v for k, v in (identity or {}).items() if v},
    )
    _onboard_event(account, now, "tokens_replaced", "new tokens stored (re-login)", actor)


# --- PKCE login -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginStarted:
    authorize_url: str
    session: str  # opaque, shown once; only its hash is stored
    expires_at: datetime


def oauth_login_start(
    *, pool: Pool, user: User, account: Account | None = None, now: datetime | None = None
) -> LoginStarted:
    """Begin a PKCE login (valid 10 minutes), optionally to re-authorize `account` in place."""
    now = now or timezone.now()
    if account is not None and account.pool_id != pool.pk:
        raise Invalid("That account is not in this pool.", code="account_not_in_pool")
    login = anthropic.pkce_login()
    session = secrets.token_urlsafe(32)
    OAuthLogin.objects.create(
        pool=pool,
        session_hash=secret_hash(session),
        state=login.state,
        verifier=login.verifier,
        account=account,
        created_by=user,
        created_at=now,
        expires_at=now + LOGIN_TTL,
    )
    return LoginStarted(login.authorize_url, session, now + LOGIN_TTL)


def parse_pasted_code(pasted: str) -> tuple[str, str | None]:
    """`CODE#STATE`, the whole callback URL, or a bare code -> (code, state or None)."""
    pasted = pasted.strip()
    if pasted.startswith(("http://", "https://")):
        try:
            parts = urlsplit(pasted)
        except ValueError:
            return "", None
        query = parse_qs(parts.query or parts.fragment)
        code = (query.get("code") or [""])[0]
        states = query.get("state")
        found = states[0] if states else None
        if "#" in code and found is None:
            code, found = code.split("#", 1)
        return code, found
    if "#" in pasted:
        code, found = pasted.split("#", 1)
        return code, found
    return pasted, None


def _claim_login(pool: Pool, session: str, now: datetime) -> OAuthLogin:
    login = (
        OAuthLogin.objects.select_related("account")
        .filter(pool=pool, session_hash=secret_hash(session))
        .first()
    )
    if login is None:
        raise ServiceError(
            "No such login session for this pool.", code="login_not_found", status=404
        )
    if login.completed_at is not None:
        raise ServiceError("This login session was already used.", code="login_used", status=409)
    if login.expires_at <= now:
        raise ServiceError(
            "This login session expired (10 minutes); start again.",
            code="login_expired",
            status=410,
        )
    return login


def oauth_login_complete(
    *,
    pool: Pool,
    session: str,
    pasted_code: str,
    label: str = "",
    account: Account | None = None,
    actor: str,
    now: datetime | None = None,
) -> Onboarded:
    """Finish a PKCE login: check the state, exchange the code, then create the account or
    re-authorize the existing one in place (keeping its history)."""
    now = now or timezone.now()
    login = _claim_login(pool, session, now)
    code, pasted_state = parse_pasted_code(pasted_code)
    if not code:
        raise Invalid("Paste the code shown after login (CODE#STATE) or the whole callback URL.")
    if pasted_state is None:
        raise Invalid(
            "The pasted code has no state: paste CODE#STATE or the callback URL.",
            code="state_missing",
        )
    if not secrets.compare_digest(pasted_state, login.state):
        raise ServiceError("The state does not match this login session.", code="state_mismatch")
    target = account or login.account
    if target is not None and target.pool_id != pool.pk:
        raise Invalid("That account is not in this pool.", code="account_not_in_pool")
    if not target and not label:
        raise Invalid("Give the new account a label.", code="label_missing")
    # One exchange per session, even under a double submit.
    if not OAuthLogin.objects.filter(pk=login.pk, completed_at__isnull=True).update(
        completed_at=now
    ):
        raise ServiceError("This login session was already used.", code="login_used", status=409)
    try:
        with anthropic.client() as provider:
            grant = provider.exchange_code(code=code, state=login.state, verifier=login.verifier)
    except anthropic.TokenEndpointError as exc:
        if state.onboarding_token_outcome(exc.failure) == state.OnboardingOutcome.UNVERIFIED:
            raise ServiceError(
                "The provider did not answer the code exchange; start the login again.",
                code="provider_unavailable",
                status=502,
                details={"provider_status": exc.failure.status},
            ) from None
        raise _refused(exc.failure, "login code") from None
    if grant.refresh_token is None:
        raise ProviderRefused("The provider's answer carried no refresh token.")
    expires_at = now + grant.expires_in
    if target is not None:
        if target.provider_account_uuid and grant.account_uuid not in (
            "",
            target.provider_account_uuid,
        ):
            raise Conflict(
                "That login is a different provider account than the one being re-authorized.",
                code="different_account",
            )
        account_store_tokens(
            account=target,
            refresh_token=grant.refresh_token,
            access_token=grant.access_token,
            expires_at=expires_at,
            identity=grant.identity(),
            actor=actor,
            now=now,
        )
        return Onboarded(Account.objects.get(pk=target.pk), state.OnboardingOutcome.REAUTHORIZED)
    _refuse_duplicate(pool, grant.account_uuid)
    created = _create(
        pool=pool,
        label=label,
        refresh_token=grant.refresh_token,
        access_token=grant.access_token,
        expires_at=expires_at,
        identity=grant.identity(),
        actor=actor,
        now=now,
        how="PKCE login",
        refreshed=True,
    )
    return _with_first_quota_check(created, actor)


# --- Imports --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEntry:
    label: str
    refresh_token: str
    access_token: str
    expires_at: datetime | None
    email: str


def _epoch(value: Any) -> datetime | None:
    """Milliseconds (Claude Code, anthropic-auth) or seconds since the epoch, or ISO 8601."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("expiresAt is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValueError("expiresAt is neither a number nor an ISO 8601 time") from None
        if not 2000 <= parsed.year <= 9000:
            raise ValueError("expiresAt is out of range")
        return parsed
    raise ValueError("expiresAt is neither a number nor an ISO 8601 time")


def _text(entry: dict[str, Any], *names: str) -> str:
    for name in names:
        value = entry.get(name)
        if isinstance(value, str) and value.strip():
            if "\x00" in value:
                raise ValueError(f"{name} contains a NUL character")
            return value.strip()
    return ""


def _entry(raw: Any, default_label: str) -> ImportEntry:
    if not isinstance(raw, dict):
        raise ValueError("an entry must be an object")
    refresh = _text(raw, "refreshToken", "refresh_token", "refresh")
    if not refresh:
        raise ValueError("refreshToken is missing")
    access = _text(raw, "accessToken", "access_token", "access")
    expires = _epoch(raw.get("expiresAt", raw.get("expires_at", raw.get("expires"))))
    email = _text(raw, "email", "emailAddress")
    label = _text(raw, "label", "name") or email or default_label
    return ImportEntry(label[:100], refresh, access, expires if access else None, email[:254])


def parse_import(document: Any, *, label: str = "") -> list[ImportEntry]:
    """Read a Claude Code credentials file or an anthropic-auth accounts file.

    Raises Invalid with a per-entry error list when anything is wrong."""
    if not isinstance(document, dict):
        raise Invalid("The file must be a JSON object.", code="import_invalid")
    if "claudeAiOauth" in document:
        raws: list[Any] = [document["claudeAiOauth"]]
        default = label or "Claude Code"
    elif isinstance(document.get("accounts"), list):
        if document.get("version") != 1:
            raise Invalid("Only version 1 accounts files are understood.", code="import_invalid")
        raws = document["accounts"]
        default = label or "imported"
    else:
        raise Invalid(
            'Not a Claude Code credentials file ({"claudeAiOauth": …}) or an accounts file '
            '({"version": 1, "accounts": […]}).',
            code="import_invalid",
        )
    entries: list[ImportEntry] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        try:
            entries.append(_entry(raw, f"{default} {index + 1}" if len(raws) > 1 else default))
        except ValueError as exc:
            errors.append({"index": index, "error": str(exc)})
    if not raws:
        errors.append({"index": None, "error": "the file holds no accounts"})
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        mark = fingerprint(entry.refresh_token)
        if mark in seen:
            errors.append({"index": index, "error": f"same refresh token as entry {seen[mark]}"})
        seen[mark] = index
    if errors:
        raise Invalid(
            f"{len(errors)} entr{'y' if len(errors) == 1 else 'ies'} cannot be imported; "
            "nothing was saved.",
            code="import_invalid",
            details=errors,
        )
    return entries


def accounts_import(
    *, pool: Pool, document: Any, label: str = "", actor: str, now: datetime | None = None
) -> list[Account]:
    """Import every account of a file, or none. Tokens are stored as given (no provider call:
    refreshing here would rotate tokens that a refused import could then not keep); the cycle
    checks them within a minute."""
    now = now or timezone.now()
    entries = parse_import(document, label=label)
    present = set(
        Account.objects.filter(pool__team=pool.team_id).values_list(
            "refresh_token_fingerprint", flat=True
        )
    )
    errors = [
        {"index": index, "error": "this refresh token is already in the team"}
        for index, entry in enumerate(entries)
        if fingerprint(entry.refresh_token) in present
    ]
    if errors:
        raise Invalid(
            "Some accounts are already in the team; nothing was saved.",
            code="import_invalid",
            details=errors,
        )
    with transaction.atomic():
        created = [
            _create(
                pool=pool,
                label=entry.label,
                refresh_token=entry.refresh_token,
                access_token=entry.access_token,
                expires_at=entry.expires_at,
                identity={"email": entry.email} if entry.email else {},
                actor=actor,
                now=now,
                how="import",
            )
            for entry in entries
        ]
    return created
