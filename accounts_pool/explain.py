"""What the account page says about itself, as pure rules of plain values (no ORM, no clock):
which card causes the status, what changes next and why, which levers apply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import timefmt
from .state import (
    AccountState,
    PolicyStatus,
    PoolPolicy,
    ReasonCode,
    Verdict,
    access_token_valid,
)
from .words import reason_words

CARD_OF: dict[ReasonCode, str] = {
    ReasonCode.DISABLED: "admin",
    ReasonCode.NEEDS_RELOGIN: "refresh",
    ReasonCode.REFRESH_BACKOFF: "refresh",
    ReasonCode.TOKEN_EXPIRED: "refresh",
    ReasonCode.ORG_POLICY_BLOCKED: "policy",
    ReasonCode.QUOTA_EXHAUSTED: "quota",
    ReasonCode.QUOTA_UNKNOWN: "quota",
    ReasonCode.QUOTA_STALE: "quota",
    ReasonCode.COOLDOWN: "cooldown",
    ReasonCode.CREDENTIAL_UNREADABLE: "refresh",
}


def cause_cards(verdict: Verdict) -> dict[str, str]:
    """Card -> 'excludes' or 'warns' for each card holding a reason (excluding wins)."""
    cards: dict[str, str] = {}
    for reason in verdict.reasons:
        card = CARD_OF.get(reason.code, "admin")  # a code added later: the actions card
        if reason.excludes or card not in cards:
            cards[card] = "excludes" if reason.excludes else "warns"
    return cards


def _active(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


def next_change_text(state: AccountState, verdict: Verdict, now: datetime) -> str:
    """Why the verdict changes at next_change_at, in one sentence."""
    at = verdict.next_change_at
    if at is None:
        if any(r.code == ReasonCode.CREDENTIAL_UNREADABLE for r in verdict.reasons):
            return (
                "Nothing changes by itself: it waits for its encryption key to be put back "
                "(then manage.py reencrypt) or for a re-login."
            )
        if verdict.reasons:
            return "Nothing changes by itself: " + _clears(verdict) + "."
        return "Usable; nothing scheduled to change."
    when = f"{timefmt.clock(at)} ({timefmt.deadline(at, now)})"
    backoff = state.refresh_backoff_until
    if (
        state.access_expires_at == at
        and _active(backoff, now)
        and backoff is not None
        and state.access_expires_at < backoff
    ):
        return (
            f"The token expires at {timefmt.clock(at)}, before the refresh retry at "
            f"{timefmt.clock(backoff)}, so the account is excluded from {when}."
        )
    for reason in verdict.reasons:
        if reason.until == at:
            return f"“{reason_words(reason.code)}” ends at {when}."
    return f"Next change at {when}."


def _clears(verdict: Verdict) -> str:
    needs = {r.clears_on.value for r in verdict.reasons if r.excludes} or {
        r.clears_on.value for r in verdict.reasons
    }
    words = {
        "relogin": "a re-login",
        "manual": "enabling it",
        "success": "the next successful check or refresh",
        "time": "time",
    }
    return "it waits for " + " and ".join(words[n] for n in sorted(needs))


def clearable_waits(state: AccountState, now: datetime) -> list[str]:
    """The timed waits 'clear' would end, in words, as the lever's label and message say."""
    waits = []
    if _active(state.refresh_backoff_until, now):
        waits.append("refresh backoff")
    if _active(state.quota_backoff_until, now):
        waits.append("quota backoff")
    if _active(state.cooldown_until, now):
        waits.append("cooldown")
    return waits


@dataclass(frozen=True)
class Lever:
    name: str  # refresh, check-quota, clear-backoff, relogin
    label: str
    applies: bool
    primary: bool
    note: str = ""


def levers(state: AccountState, verdict: Verdict, now: datetime) -> list[Lever]:
    """The account page's levers: the ones that can help now are primary, the others are
    secondary with a note, and the ones that cannot apply at all are left out."""
    codes = {r.code for r in verdict.reasons}
    result: list[Lever] = []
    if not state.is_oauth:
        return result
    relogin_needed = (
        bool(codes & {ReasonCode.NEEDS_RELOGIN, ReasonCode.CREDENTIAL_UNREADABLE})
        or not state.has_refresh_token
    )
    if not relogin_needed:
        token_trouble = bool(codes & {ReasonCode.REFRESH_BACKOFF, ReasonCode.TOKEN_EXPIRED})
        result.append(
            Lever(
                "refresh", "Refresh now", True, token_trouble, "" if token_trouble else "not needed"
            )
        )
    token_ok = access_token_valid(state, now)
    quota_trouble = bool(
        codes
        & {
            ReasonCode.QUOTA_STALE,
            ReasonCode.QUOTA_UNKNOWN,
            ReasonCode.ORG_POLICY_BLOCKED,
            ReasonCode.QUOTA_EXHAUSTED,
        }
    )
    result.append(
        Lever(
            "check-quota",
            "Check quota now",
            token_ok,
            token_ok and quota_trouble,
            "" if token_ok else "needs a valid token first",
        )
    )
    waits = clearable_waits(state, now)
    if waits:
        label = "Clear " + " and ".join(waits)
        result.append(Lever("clear-backoff", label, True, True))
    result.append(
        Lever(
            "relogin",
            "Re-login",
            True,
            relogin_needed,
            "" if relogin_needed else "only when the refresh token is rejected",
        )
    )
    return result


def policy_next_recheck(state: AccountState, policy: PoolPolicy) -> datetime | None:
    """When a blocked account's policy is checked again (None when not blocked)."""
    if state.policy_status != PolicyStatus.BLOCKED or state.policy_checked_at is None:
        return None
    return state.policy_checked_at + policy.policy_recheck


def next_refresh_at(state: AccountState, policy: PoolPolicy, now: datetime) -> datetime | None:
    """When the cycle refreshes the token next: after a backoff, or the refresh lead before
    expiry; None while it waits for a re-login."""
    if not state.is_oauth or state.needs_relogin or not state.has_refresh_token:
        return None
    if _active(state.refresh_backoff_until, now):
        return state.refresh_backoff_until
    if state.access_expires_at is None:
        return None
    return state.access_expires_at - policy.refresh_lead
