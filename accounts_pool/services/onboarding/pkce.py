"""The PKCE login: a person logs in at the provider and pastes the code back; the exchange
creates an account or re-authorizes an existing one in place."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.contrib.auth.models import User
from django.utils import timezone

from ... import state
from ...crypto import SecretDecryptionError
from ...models import Account, OAuthLogin, Pool
from ...providers import anthropic
from ..errors import Conflict, Invalid, ProviderRefused, ServiceError
from ..keys import secret_hash
from .common import (
    Onboarded,
    create_oauth,
    refuse_duplicate_identity,
    refuse_held_refresh_token,
    refused,
    with_first_quota_check,
)
from .tokens import account_store_tokens

LOGIN_TTL = timedelta(minutes=10)


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
        # The verifier is read once the session checks out (_verifier); the account's secrets
        # are never needed here.
        .defer("verifier", *(f"account__{name}" for name in Account.SECRET_FIELDS))
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


def _verifier(login: OAuthLogin) -> str:
    try:
        return login.verifier
    except SecretDecryptionError:
        raise ServiceError(
            "This login session was started under an encryption key that is no longer "
            "configured; start again.",
            code="login_expired",
            status=410,
        ) from None


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
    verifier = _verifier(login)
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
            grant = provider.exchange_code(code=code, state=login.state, verifier=verifier)
    except anthropic.TokenEndpointError as exc:
        if state.onboarding_token_outcome(exc.failure) == state.OnboardingOutcome.UNVERIFIED:
            raise ServiceError(
                "The provider did not answer the code exchange; start the login again.",
                code="provider_unavailable",
                status=502,
                details={"provider_status": exc.failure.status},
            ) from None
        raise refused(exc.failure, "login code") from None
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
    refuse_duplicate_identity(pool, grant.account_uuid)
    refuse_held_refresh_token(pool.team_id, grant.refresh_token)
    created = create_oauth(
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
    return with_first_quota_check(created, actor)


def logins_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete PKCE logins that expired more than `older_than` ago (completed or not: a session
    is used once, within 10 minutes); each holds an encrypted verifier. Returns how many."""
    deleted, _ = OAuthLogin.objects.filter(expires_at__lt=now - older_than).delete()
    return deleted
