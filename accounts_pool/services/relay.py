"""The relay's reads and writes (DESIGN.md 4.4), for the async views to call in a thread.

Nothing here is new state logic: an account is chosen by checkout (routing, eligibility for the
request's model, stickiness, a refresh under 5 minutes), an upstream 401 refreshes through the
refresh service's single flight, and what the Messages API answered is recorded as a tool's
report records it (services/reports.py), with the consumer key as actor.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ParamSpec, TypeVar

from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import state
from ..models import Account, Checkout, ConsumerKey, QuotaWindow
from ..providers import anthropic
from . import limits
from .checkout import Admit, CheckoutResult, NoUsableAccount, UnknownKey, checkout_create
from .keys import secret_hash
from .refresh import account_refresh, refresh_record_access_rejected
from .reports import report_record, store_windows

P = ParamSpec("P")
R = TypeVar("R")

# Rate-limit headers are written at most once per account per this long, counted from the last
# write by the relay in this process (a poll does not start it).
HARVEST_EVERY = 10.0


@dataclass(frozen=True)
class Routed:
    """The account a relayed request goes to, and the credential it goes with."""

    checkout: Checkout
    account_id: int
    version: int
    access_token: str = field(repr=False)
    token_from_401: bool


class Failover(StrEnum):
    RATE_LIMITED = "rate_limited"
    TOKEN_REJECTED = "token_rejected"
    POLICY_BLOCKED = "policy_blocked"


@dataclass(frozen=True)
class Started:
    """A relayed request let in: its key (with its pool), the limits' hold, its first account."""

    key: ConsumerKey
    admission: limits.Admission
    routed: Routed


class NothingToRoute(Exception):
    """No account of the key's pool can serve the request now (the tool gets a 429)."""

    def __init__(self, said: NothingRoutable) -> None:
        super().__init__(said.message)
        self.said = said


def _unless_deleted(function: Callable[P, R]) -> Callable[P, R | None]:
    """What an answer does to an account is recorded while the account lives: when a lead
    deleted it while its request was upstream (it, or its checkout or pool with it, is gone),
    there is nothing to record, and the call returns None instead of failing the tool's
    request."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return function(*args, **kwargs)
        except (ObjectDoesNotExist, IntegrityError):
            return None

    return run


def relay_start(*, secret: str, session: str, model: str | None) -> Started:
    """Everything a relayed request needs before it goes upstream, in one call (one thread hop
    for the async relay): an account by checkout's rules, whose statement reads the key and its
    pool; the key's limits are applied to the key as read there, before an account is chosen.

    Raises UnknownKey (no live key for the secret), KeyLimitExceeded, or NothingToRoute."""
    if not secret:
        raise UnknownKey()
    gate = limits.Gate(model=model, concurrent=True)
    try:
        result = _checkout(
            key_hash=secret_hash(secret),
            session=session,
            model=model,
            exclude=frozenset(),
            admit=gate,
        )
    except BaseException:
        limits.limits_release(gate.admission)
        raise
    return Started(result.key, gate.admission, _routed(result.checkout, result.account))


def relay_route(
    *, key: ConsumerKey, session: str, model: str | None, exclude: frozenset[int]
) -> Routed:
    """The next account for a request that left the accounts in `exclude`, by checkout's rules.
    Raises NothingToRoute when none is left, UnknownKey when the key was revoked meanwhile."""
    result = _checkout(key_hash=key.key_hash, session=session, model=model, exclude=exclude)
    return _routed(result.checkout, result.account)


def _checkout(
    *,
    key_hash: str,
    session: str,
    model: str | None,
    exclude: frozenset[int],
    admit: Admit | None = None,
) -> CheckoutResult:
    try:
        return checkout_create(
            key_hash=key_hash, session=session, model=model, exclude=exclude, admit=admit
        )
    except NoUsableAccount as exc:
        said = nothing_routable(exc, pool_slug=exc.pool_slug, model=model, now=timezone.now())
        raise NothingToRoute(said) from None


def relay_end(*, key: ConsumerKey, admission: limits.Admission, tokens: int, now: datetime) -> None:
    """A relayed request ended: add its tokens to a key with a token limit, free its slot."""
    try:
        limits.limits_count_tokens(key=key, tokens=tokens, now=now)
    finally:
        limits.limits_release(admission)


def relay_end_due(key: ConsumerKey, admission: limits.Admission) -> bool:
    """Whether relay_end has anything to do (else the async relay skips its thread hop)."""
    return key.limit_tokens_per_5h is not None or admission.slot is not None


def _routed(checkout: Checkout, account: Account) -> Routed:
    """The account's current credential, for the request that `checkout` recorded."""
    return Routed(
        checkout=checkout,
        account_id=account.pk,
        version=account.credential_version,
        access_token=account.access_token,
        token_from_401=account.access_from_401,
    )


@_unless_deleted
def relay_refresh(*, key: ConsumerKey, routed: Routed) -> Routed | None:
    """The Messages API said 401 to this credential: refresh it once (single flight with the
    cycle and checkout) and return the new credential, or None when there is none."""
    refreshed = account_refresh(
        account_id=routed.account_id,
        access_rejected_version=routed.version,
        only_version=routed.version,  # replaced meanwhile: the newer credential serves instead
        asked_by_401=True,
        wait=True,
        actor=key.actor,
    )
    if not refreshed.has_fresh_token:
        return None
    account = Account.objects.only(
        "access_token", "access_expires_at", "credential_version", "access_from_401"
    ).get(pk=routed.account_id)
    if account.access_expires_at is None or account.access_expires_at <= timezone.now():
        return None
    return _routed(routed.checkout, account)


@_unless_deleted
def relay_failover(
    *,
    key: ConsumerKey,
    routed: Routed,
    failover: Failover,
    status: int,
    headers: Mapping[str, str],
    message: str,
) -> bool:
    """Record why the relay left an account, as a tool's report of that answer records it.
    Returns whether a quota check should be queued (a policy block that is new)."""
    if failover == Failover.TOKEN_REJECTED:
        account = Account.objects.defer(*Account.SECRET_FIELDS).get(pk=routed.account_id)
        action = state.report_401_action(  # a tool's 401 report follows the same rule
            reported_version=routed.version,
            current_version=account.credential_version,
            token_from_401=True,  # the relay's own refresh for this 401 is spent
        )
        if action == state.Report401Action.BACK_OFF:
            refresh_record_access_rejected(
                account, endpoint="Messages API", status=status, now=timezone.now(), actor=key.actor
            )
        return False
    reported = 429 if failover == Failover.RATE_LIMITED else status
    outcome = report_record(
        checkout=routed.checkout,
        key=key,
        status=reported,
        headers=dict(headers),
        message=message or f"HTTP {status} from the Messages API (relayed)",
        sent=(routed.access_token,),
    )
    return outcome.queue_quota_check


_last_harvest: dict[int, float] = {}


def harvest_due(account_id: int) -> bool:
    """Whether this process may write this account's windows from headers now (a write per
    account per HARVEST_EVERY seconds); answering yes starts the next wait. No database."""
    now = time.monotonic()
    last = _last_harvest.get(account_id)
    if last is not None and now - last < HARVEST_EVERY:
        return False
    _last_harvest[account_id] = now
    return True


@_unless_deleted
def relay_harvest(*, account_id: int, headers: Mapping[str, str]) -> list[str]:
    """Store the windows an upstream answer's rate-limit headers carry (source relay). Returns
    the window keys written."""
    windows = anthropic.parse_ratelimit_headers(dict(headers))
    if not windows:
        return []
    with transaction.atomic():
        return store_windows(account_id, windows, timezone.now(), QuotaWindow.Source.RELAY)


@dataclass(frozen=True)
class NothingRoutable:
    retry_after: int  # seconds
    message: str


REASON_WORDS = {
    state.ReasonCode.DISABLED: "disabled",
    state.ReasonCode.NEEDS_RELOGIN: "need re-login",
    state.ReasonCode.REFRESH_BACKOFF: "failing to refresh",
    state.ReasonCode.TOKEN_EXPIRED: "waiting for a token refresh",
    state.ReasonCode.ORG_POLICY_BLOCKED: "blocked by the organisation's policy",
    state.ReasonCode.QUOTA_EXHAUSTED: "at a quota limit",
    state.ReasonCode.QUOTA_UNKNOWN: "with unknown quota",
    state.ReasonCode.QUOTA_STALE: "with stale quota",
    state.ReasonCode.COOLDOWN: "rate limited",
    state.ReasonCode.CREDENTIAL_UNREADABLE: "unreadable with the configured keys",
}
RETRY_AFTER_UNKNOWN = 60  # seconds: no exclusion ends by time (a person must act)


def nothing_routable(
    error: NoUsableAccount, *, pool_slug: str, model: str | None, now: datetime
) -> NothingRoutable:
    """The message a tool prints when no account can serve: how many accounts are out, why,
    and until when ("2 at a quota limit until 16:00 UTC, 1 need re-login")."""
    groups: dict[str, list[datetime | None]] = {}
    for account in error.details["accounts"]:
        excluding = account["reasons"][:1] if account["status"] == "excluded" else []
        for reason in excluding:
            groups.setdefault(reason["code"], []).append(reason["until"])
    parts = []
    for code, untils in sorted(groups.items(), key=lambda item: -len(item[1])):
        known = [u for u in untils if u is not None]
        until = f" until {min(known):%H:%M} UTC" if known else ""
        parts.append(f"{len(untils)} {REASON_WORDS.get(state.ReasonCode(code), code)}{until}")
    which = f" for {model}" if model else ""
    message = f"accounts-pool: no account{which} in pool '{pool_slug}'"
    message += f": {', '.join(parts)}." if parts else " (it has no accounts)."
    retry_after = RETRY_AFTER_UNKNOWN
    if error.retry_at is not None:
        retry_after = max(1, int((error.retry_at - now) / timedelta(seconds=1)) + 1)
    return NothingRoutable(retry_after, message)
