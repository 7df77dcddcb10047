"""What the three ways in share: the outcome type, the onboarding event, the refusals, and the
one place an OAuth account row is created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from ... import state
from ...crypto import fingerprint, fingerprints
from ...models import Account, Pool
from ..errors import Conflict, ProviderRefused
from ..events import event_record
from ..quota import QuotaOutcome, account_check_quota


@dataclass(frozen=True)
class Onboarded:
    account: Account
    outcome: state.OnboardingOutcome


def onboard_event(account: Account, now: datetime, outcome: str, message: str, actor: str) -> None:
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.ONBOARDING,
        outcome=outcome,
        message=message,
        actor=actor,
    )


def refuse_duplicate_identity(
    pool: Pool, account_uuid: str, *, keep: Account | None = None
) -> None:
    if not account_uuid:
        return
    taken = Account.objects.filter(pool__team=pool.team_id, provider_account_uuid=account_uuid)
    if keep is not None:
        taken = taken.exclude(pk=keep.pk)
    existing = taken.only("pk", "label").first()
    if existing is not None:
        raise Conflict(
            f"This provider account is already in the team as “{existing.label}”.",
            code="duplicate_account",
            details={"account_id": existing.pk},
        )


def accounts_holding_refresh_tokens(team_id: int, refresh_tokens: list[str]) -> dict[str, Account]:
    """The team's accounts whose current refresh token is one of these, by token. A stored
    fingerprint may be under any configured key (rows older than a key rotation), so each token
    is looked up under all of them: one indexed query."""
    marks = {mark: token for token in refresh_tokens for mark in fingerprints(token)}
    if not marks:
        return {}
    rows = Account.objects.filter(pool__team=team_id, refresh_token_fingerprint__in=marks)
    found: dict[str, Account] = {}
    for account in rows.order_by("pk").only("pk", "label", "refresh_token_fingerprint"):
        found.setdefault(marks[account.refresh_token_fingerprint], account)
    return found


def refuse_held_refresh_token(team_id: int, refresh_token: str) -> None:
    """Refuse a refresh token an account of the team already holds, before anything sends it to
    the provider: tokens are single-use, so a refresh with it would kill that account."""
    holder = accounts_holding_refresh_tokens(team_id, [refresh_token]).get(refresh_token)
    if holder is not None:
        raise Conflict(
            f"This refresh token is already in the team as “{holder.label}”; "
            "nothing was sent to the provider.",
            code="duplicate_account",
            details={"account_id": holder.pk},
        )


def refused(failure: state.TokenFailure | state.QuotaFailure, what: str) -> ProviderRefused:
    return ProviderRefused(
        f"The provider refused the {what}: {failure.message or failure.kind.value}",
        details={
            "provider_status": failure.status,
            "provider_error": failure.error_code,
            "provider_message": failure.message,
        },
    )


def create_oauth(
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
            **access_fields(access_token, expires_at),
            last_refreshed_at=now if refreshed else None,  # tokens fresh from the provider
            credential_version=1,
            **identity,
        )
        onboard_event(account, now, "created", f"OAuth account added ({how})", actor)
    return account


def access_fields(access_token: str, expires_at: datetime | None) -> dict[str, object]:
    """An access token is stored with its expiry or not at all (state_snapshot relies on it)."""
    if access_token and expires_at:
        return {"access_token": access_token, "access_expires_at": expires_at}
    return {"access_token": "", "access_expires_at": None}


def with_first_quota_check(account: Account, actor: str) -> Onboarded:
    """Poll the new account's quota at once, so it is usable (or says why not) right away
    instead of after the next cycle."""
    checked = account_check_quota(account_id=account.pk, force=True, actor=actor)
    outcome = (
        state.OnboardingOutcome.POLICY_BLOCKED
        if checked.outcome == QuotaOutcome.POLICY_BLOCKED
        else state.OnboardingOutcome.VERIFIED
    )
    return Onboarded(Account.objects.get(pk=account.pk), outcome)
