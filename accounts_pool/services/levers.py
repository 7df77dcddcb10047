"""The manual levers people pull: enable, disable, clear backoff. Each leaves a history row."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from django.db import transaction
from django.utils import timezone

from .. import state
from ..models import Account
from .errors import Invalid
from .events import event_record
from .quota import QuotaOutcome, account_check_quota
from .refresh import RefreshOutcome, account_refresh


class LeverError(Invalid):
    """The lever cannot be pulled as asked (the message says why): a 422 in the API."""


class ClearOutcome(StrEnum):
    CLEARED = "cleared"
    NOTHING_TO_CLEAR = "nothing_to_clear"


def _admin_event(account: Account, now: datetime, outcome: str, message: str, actor: str) -> None:
    event_record(
        account_id=account.pk,
        at=now,
        operation=state.Operation.ADMIN,
        outcome=outcome,
        message=message,
        actor=actor,
    )


def _disabled_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise LeverError("Say why the account is disabled.")
    return reason


def account_disable(
    *, account: Account, reason: str, actor: str, now: datetime | None = None
) -> None:
    """Take an account out of use until a person enables it again."""
    reason = _disabled_reason(reason)
    now = now or timezone.now()
    Account.objects.filter(pk=account.pk).update(
        enabled=False, disabled_reason=reason[:200], disabled_by=actor[:150], disabled_at=now
    )
    _admin_event(account, now, "disabled", reason, actor)


def account_enable(*, account: Account, actor: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    Account.objects.filter(pk=account.pk).update(
        enabled=True, disabled_reason="", disabled_by="", disabled_at=None
    )
    _admin_event(account, now, "enabled", "", actor)


def account_clear_backoff(*, account: Account, actor: str, now: datetime | None = None) -> bool:
    """Let the next cycle retry at once: ends the refresh and quota backoffs and any cooldown.

    Failure counts stay, so a retry that fails again climbs the ladder instead of restarting it.
    Returns False when there was nothing to clear."""
    now = now or timezone.now()
    cleared = []
    if account.refresh_backoff_until and account.refresh_backoff_until > now:
        cleared.append(f"refresh backoff until {account.refresh_backoff_until:%Y-%m-%d %H:%M} UTC")
    if account.quota_backoff_until and account.quota_backoff_until > now:
        cleared.append(f"quota backoff until {account.quota_backoff_until:%Y-%m-%d %H:%M} UTC")
    if account.cooldown_until and account.cooldown_until > now:
        cleared.append(f"cooldown until {account.cooldown_until:%Y-%m-%d %H:%M} UTC")
    if not cleared:
        return False
    Account.objects.filter(pk=account.pk).update(
        refresh_backoff_until=None, quota_backoff_until=None, cooldown_until=None
    )
    _admin_event(account, now, "backoff_cleared", "; ".join(cleared), actor)
    return True


def account_refresh_now(*, account: Account, actor: str) -> RefreshOutcome:
    """A person asks for a refresh now: ignores the backoff (not a needs-re-login). Returns the
    outcome, recorded with the actor."""
    now = timezone.now()
    result = account_refresh(account_id=account.pk, now=now, force=True, wait=True, actor=actor)
    _admin_event(account, now, "refresh_requested", f"refresh now: {result.outcome}", actor)
    return result.outcome


def account_check_quota_now(*, account: Account, actor: str) -> QuotaOutcome:
    """A person asks for a quota check now: ignores the interval and the quota backoff."""
    now = timezone.now()
    result = account_check_quota(account_id=account.pk, now=now, force=True, actor=actor)
    _admin_event(account, now, "quota_check_requested", f"check quota now: {result.outcome}", actor)
    return result.outcome


def account_update(
    *,
    account: Account,
    actor: str,
    label: str | None = None,
    priority: int | None = None,
    enabled: bool | None = None,
    disabled_reason: str | None = None,
) -> None:
    """Change what people own on an account; enabling and disabling go through their levers.

    Everything is checked before anything is written, and written in one transaction: a refused
    change leaves the account as it was."""
    disabling = enabled is False and account.enabled
    if disabling and disabled_reason is not None:
        _disabled_reason(disabled_reason)
    changes: dict[str, object] = {}
    if label is not None:
        changes["label"] = label
    if priority is not None:
        changes["priority"] = priority
    with transaction.atomic():
        if changes:
            Account.objects.filter(pk=account.pk).update(**changes)
        if disabling:
            account_disable(account=account, reason=disabled_reason or "disabled", actor=actor)
        elif enabled is True and not account.enabled:
            account_enable(account=account, actor=actor)


def account_delete(*, account: Account) -> None:
    """Remove an account with its windows, history and checkouts."""
    account.delete()
