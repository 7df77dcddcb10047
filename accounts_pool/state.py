"""The pure rules of account state (DESIGN.md 3).

No ORM, no clock, no network: every function takes plain values and `now`. The services turn
these answers into writes; the admin, the pages, the API and checkout read `eligibility()`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from . import timefmt

# --- Vocabulary ------------------------------------------------------------------------------


class FailureKind(StrEnum):
    """What a provider answered, independent of which operation asked."""

    INVALID_GRANT = "invalid_grant"  # refresh token dead (also refresh_token_reused)
    REJECTED = "rejected"  # other 4xx: 400, 401, 403 ...
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    NETWORK = "network_error"  # connect error, reset, timeout
    MALFORMED = "malformed"  # 2xx we could not parse
    INTERNAL = "internal_error"  # our side failed around the call (a bad key, a bug)
    # The usage endpoint or the Messages API answered 401 to an access token that a refresh had
    # just issued because of a 401: refreshing again at once would not help, so it backs off.
    ACCESS_REJECTED = "access_rejected"


class Operation(StrEnum):
    TOKEN_REFRESH = "token_refresh"
    QUOTA_CHECK = "quota_check"
    REPORT = "report"
    ONBOARDING = "onboarding"
    ADMIN = "admin"
    # Reading a stored secret: a key rotation left it under a key no longer configured.
    DECRYPTION = "decryption"


class PolicyStatus(StrEnum):
    OK = "ok"
    BLOCKED = "blocked"


class Status(StrEnum):
    USABLE = "usable"
    DEGRADED = "degraded"
    EXCLUDED = "excluded"


class ReasonCode(StrEnum):
    DISABLED = "disabled"
    NEEDS_RELOGIN = "needs_relogin"
    REFRESH_BACKOFF = "refresh_backoff"
    TOKEN_EXPIRED = "token_expired"
    ORG_POLICY_BLOCKED = "org_policy_blocked"
    QUOTA_EXHAUSTED = "quota_exhausted"
    QUOTA_UNKNOWN = "quota_unknown"
    QUOTA_STALE = "quota_stale"
    COOLDOWN = "cooldown"
    CREDENTIAL_UNREADABLE = "credential_unreadable"


class ClearsOn(StrEnum):
    TIME = "time"
    SUCCESS = "success"
    RELOGIN = "relogin"
    MANUAL = "manual"


INVALID_GRANT_CODES = frozenset({"invalid_grant", "refresh_token_reused"})


@dataclass(frozen=True)
class ProviderFailure:
    """A failed provider call, as plain values. Carries no secret. Never built directly: each
    operation has its own subclass, so a token-endpoint failure cannot be recorded as a quota
    failure (or the reverse) without mypy saying so (DESIGN.md 3.1, the classic bug)."""

    kind: FailureKind
    status: int | None = None
    error_code: str | None = None
    message: str = ""
    retry_after: str | None = None  # raw header value: seconds or an HTTP date


@dataclass(frozen=True)
class TokenFailure(ProviderFailure):
    """The token endpoint (refresh or code exchange) failed."""


@dataclass(frozen=True)
class QuotaFailure(ProviderFailure):
    """The usage (quota) endpoint failed."""


@dataclass(frozen=True)
class ProfileFailure(ProviderFailure):
    """The profile endpoint failed (onboarding only reads it for identity)."""


def failure_kind(*, status: int, error_code: str | None) -> FailureKind:
    """Classify an HTTP error answer (the transport and parse failures are classified where
    they happen)."""
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status >= 500:
        return FailureKind.SERVER_ERROR
    if status == 400 and error_code in INVALID_GRANT_CODES:
        return FailureKind.INVALID_GRANT
    return FailureKind.REJECTED


# --- Backoff ladders (DESIGN.md 3.1) ----------------------------------------------------------

REFRESH_REJECTED_BASE = timedelta(minutes=30)
REFRESH_REJECTED_CAP = timedelta(hours=24)
REFRESH_TRANSIENT_BASE = timedelta(minutes=5)
REFRESH_TRANSIENT_CAP = timedelta(minutes=60)
REFRESH_RETRY_AFTER_CAP = timedelta(hours=24)
# Retry-After: 0 (or a date in the past) must not turn into a retry on every tick.
REFRESH_RETRY_AFTER_FLOOR = timedelta(minutes=1)
REFRESH_NETWORK_DELAY = timedelta(minutes=5)
QUOTA_BASE = timedelta(minutes=1)
QUOTA_CAP = timedelta(minutes=15)
QUOTA_RETRY_AFTER_CAP = timedelta(minutes=15)
QUOTA_RETRY_AFTER_FLOOR = timedelta(seconds=30)


RETRY_AFTER_MAX = timedelta(days=3650)  # anything longer is noise; the ladders cap far lower


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Retry-After as a delay: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return min(max(when - now, timedelta(0)), RETRY_AFTER_MAX)
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return timedelta(seconds=min(seconds, RETRY_AFTER_MAX.total_seconds()))


def doubling(base: timedelta, cap: timedelta, failures: int) -> timedelta:
    """base, 2*base, 4*base ... capped; `failures` counts the failure being recorded (>= 1)."""
    steps = max(failures, 1) - 1
    if steps >= 32:
        return cap
    return min(base * (1 << steps), cap)


def refresh_backoff_delay(
    kind: FailureKind, failures: int, retry_after: timedelta | None
) -> timedelta:
    """How long the token endpoint is left alone after a failed refresh."""
    if kind == FailureKind.REJECTED:
        return doubling(REFRESH_REJECTED_BASE, REFRESH_REJECTED_CAP, failures)
    if kind in (FailureKind.RATE_LIMITED, FailureKind.SERVER_ERROR):
        if retry_after is not None:
            return min(max(retry_after, REFRESH_RETRY_AFTER_FLOOR), REFRESH_RETRY_AFTER_CAP)
        return doubling(REFRESH_TRANSIENT_BASE, REFRESH_TRANSIENT_CAP, failures)
    # Network, timeout, malformed body, our own failure. (invalid_grant parks the account.)
    return REFRESH_NETWORK_DELAY


def quota_backoff_delay(failures: int, retry_after: timedelta | None) -> timedelta:
    """How long the usage endpoint is left alone after a transient quota failure."""
    if retry_after is not None:
        return min(max(retry_after, QUOTA_RETRY_AFTER_FLOOR), QUOTA_RETRY_AFTER_CAP)
    return doubling(QUOTA_BASE, QUOTA_CAP, failures)


# --- Classification: token refresh --------------------------------------------------------------


@dataclass(frozen=True)
class RefreshFailureEffect:
    """What a failed token refresh does to the refresh-state group (and nothing else)."""

    outcome: FailureKind
    failures: int
    backoff_until: datetime | None
    needs_relogin: bool
    retry_after: timedelta | None


def refresh_failure_effect(
    failure: TokenFailure, *, previous_failures: int, now: datetime
) -> RefreshFailureEffect:
    failures = previous_failures + 1
    retry_after = parse_retry_after(failure.retry_after, now)
    if failure.kind == FailureKind.INVALID_GRANT:
        # Dead refresh token: no timed retry at all; only a new refresh token clears it.
        return RefreshFailureEffect(failure.kind, failures, None, True, retry_after)
    delay = refresh_backoff_delay(failure.kind, failures, retry_after)
    return RefreshFailureEffect(failure.kind, failures, now + delay, False, retry_after)


# --- Classification: quota check ---------------------------------------------------------------


class QuotaFailureAction(StrEnum):
    REFRESH_AND_RETRY = "refresh_and_retry"  # 401: the access token is dead, not the quota
    ACCESS_REJECTED = "access_rejected"  # 401 again, on a token a usage 401 already replaced
    POLICY_BLOCKED = "policy_blocked"  # 403: organisation policy, not a quota failure
    BACKOFF = "backoff"  # 429, 5xx, network, malformed, other 4xx


@dataclass(frozen=True)
class QuotaFailureEffect:
    action: QuotaFailureAction
    failures: int
    backoff_until: datetime | None
    retry_after: timedelta | None


def quota_failure_effect(
    failure: QuotaFailure,
    *,
    previous_failures: int,
    token_from_401: bool,
    retried: bool = False,
    now: datetime,
) -> QuotaFailureEffect:
    """Classify a usage-endpoint failure.

    A 401 is never a quota failure. It refreshes the token and retries once, unless the token
    in use was itself obtained by a refresh that a usage 401 asked for (`token_from_401`)
    or this is that retry: then the token is what the provider rejects (ACCESS_REJECTED), and
    the refresh service backs off. The guard is per token, so nothing loops."""
    retry_after = parse_retry_after(failure.retry_after, now)
    if failure.status == 401:
        action = (
            QuotaFailureAction.ACCESS_REJECTED
            if retried or token_from_401
            else QuotaFailureAction.REFRESH_AND_RETRY
        )
        return QuotaFailureEffect(action, previous_failures, None, None)
    if failure.status == 403:
        return QuotaFailureEffect(
            QuotaFailureAction.POLICY_BLOCKED, previous_failures, None, retry_after
        )
    failures = previous_failures + 1
    until = now + quota_backoff_delay(failures, retry_after)
    return QuotaFailureEffect(QuotaFailureAction.BACKOFF, failures, until, retry_after)


# --- The credential after a refresh, and a rejected access token ---------------------------------

ACCESS_REJECTED_BASE = timedelta(minutes=5)
ACCESS_REJECTED_CAP = timedelta(minutes=60)


@dataclass(frozen=True)
class RefreshSuccessEffect:
    failures: int  # consecutive refresh failures after this success
    token_from_401: bool  # the new access token was asked for by a usage 401


def refresh_success_effect(
    *, previous_failures: int, previous_error_kind: str, asked_by_401: bool
) -> RefreshSuccessEffect:
    """A refresh that replaces a token the usage endpoint rejected keeps the failure streak (so
    the access-rejected ladder climbs) and marks the new token as obtained because of a 401."""
    replaces_rejected = previous_error_kind == FailureKind.ACCESS_REJECTED
    return RefreshSuccessEffect(
        failures=previous_failures if replaces_rejected else 0,
        token_from_401=asked_by_401 or replaces_rejected,
    )


def access_rejected_effect(*, previous_failures: int, now: datetime) -> RefreshFailureEffect:
    """The usage endpoint rejected a token a usage 401 had just obtained: the token is dead,
    and the next refresh waits 5 minutes, doubling to an hour while it keeps happening."""
    failures = previous_failures + 1
    until = now + doubling(ACCESS_REJECTED_BASE, ACCESS_REJECTED_CAP, failures)
    return RefreshFailureEffect(FailureKind.ACCESS_REJECTED, failures, until, False, None)


class Report401Action(StrEnum):
    """What a tool's report of a 401 does (or the relay's, once its own refresh is spent)."""

    STALE = "stale"  # the credential the checkout handed out was replaced since: nothing changes
    REFRESH = "refresh"  # the current access token is dead: one refresh for this version
    BACK_OFF = "back_off"  # the current token came from a 401's refresh: the refresh backs off


def report_401_action(
    *, reported_version: int | None, current_version: int, token_from_401: bool
) -> Report401Action:
    """A 401 is about the credential the checkout handed out (`reported_version`; None for a
    checkout recorded before versions were kept, taken as the current one). A report about an
    older credential changes nothing, so a late 401 never expires the fresh token, and a refresh
    only ever replaces the version it was asked for: at most one report-driven refresh per
    version. A 401 on a token that a 401's refresh had just issued backs the refresh off (the
    access-rejected ladder) instead of refreshing again at once, as the relay and quota check
    do."""
    if reported_version is not None and reported_version != current_version:
        return Report401Action.STALE
    return Report401Action.BACK_OFF if token_from_401 else Report401Action.REFRESH


INTERRUPTED_REFRESH_NOTE = "the provider may have rotated the token during an interrupted refresh"


def refresh_interrupted(
    *, sent_at: datetime | None, claimed_until: datetime | None, now: datetime
) -> bool:
    """A refresh request went out (`sent_at`) and no answer was stored before its claim lapsed:
    the worker stopped mid-call (killed, or its machine lost). The provider may have rotated
    the refresh token without the app ever storing the new one."""
    return sent_at is not None and (claimed_until is None or claimed_until <= now)


def interrupted_failure(failure: TokenFailure, *, interrupted: bool) -> TokenFailure:
    """After an interrupted refresh, an invalid_grant most likely means the provider rotated the
    token during that refresh (and now sees the old one again), not a token that died on its
    own: the message says so. Anything else is left as it is."""
    if not interrupted or failure.kind != FailureKind.INVALID_GRANT:
        return failure
    detail = f" ({failure.message})" if failure.message else ""
    return replace(failure, message=f"{INTERRUPTED_REFRESH_NOTE}{detail}")


# --- Classification: onboarding -----------------------------------------------------------------


class OnboardingOutcome(StrEnum):
    VERIFIED = "verified"  # the provider accepted the tokens
    POLICY_BLOCKED = "policy_blocked"  # onboarded; the organisation forbids OAuth use for now
    UNVERIFIED = "unverified"  # onboarded; the provider was busy, the cycle retries
    REFUSED = "refused"  # nothing saved: the provider rejected what was given
    REAUTHORIZED = "reauthorized"  # an existing account got new tokens
    STORED = "stored"  # an API key, stored as given (nothing to check it with)


def onboarding_usage_outcome(failure: QuotaFailure) -> OnboardingOutcome:
    """A usage-endpoint failure while checking a pasted access token."""
    if failure.status == 403:
        return OnboardingOutcome.POLICY_BLOCKED
    if failure.kind in TRANSIENT_FAILURES:
        return OnboardingOutcome.UNVERIFIED
    return OnboardingOutcome.REFUSED


def onboarding_token_outcome(failure: TokenFailure) -> OnboardingOutcome:
    """A token-endpoint failure while checking a pasted refresh token or a login code."""
    if failure.kind in TRANSIENT_FAILURES:
        return OnboardingOutcome.UNVERIFIED
    return OnboardingOutcome.REFUSED


# A tool's 429 cools its account down at most this long; a longer limit is the windows' business.
COOLDOWN_CAP = timedelta(minutes=30)


def report_cooldown(
    retry_after: str | None,
    windows: Iterable[tuple[float | None, datetime | None]],
    now: datetime,
) -> timedelta:
    """How long a reported 429 cools the account down: Retry-After, else the reported reset
    (of a full window first), capped at 30 minutes. `windows` are (utilization, resets_at)."""
    delay = parse_retry_after(retry_after, now)
    if delay is None:
        ahead = [(used, at) for used, at in windows if at is not None and at > now]
        full = [at for used, at in ahead if (used or 0) >= 100]
        resets = full or [at for _, at in ahead]
        delay = (min(resets) - now) if resets else COOLDOWN_CAP
    return min(delay, COOLDOWN_CAP)


# --- The relay: what an upstream answer means for the account (DESIGN.md 4.4) --------------------

POLICY_MARKERS = ("not allowed for this organization",)


def is_policy_message(text: str) -> bool:
    """Does a 403's message say the organisation forbids OAuth use (PROVIDERS.md)?"""
    lowered = text.lower()
    return any(marker in lowered for marker in POLICY_MARKERS)


class RelayVerdict(StrEnum):
    PASS = "pass"  # the tool gets the answer; no account state changes (but the windows)
    RATE_LIMITED = "rate_limited"  # cooldown as a reported 429, then the next account
    REFRESH_AND_RETRY = "refresh_and_retry"  # 401: refresh once, retry the same account
    TOKEN_REJECTED = "token_rejected"  # 401 after that refresh: the next account
    POLICY_BLOCKED = "policy_blocked"  # 403 with the policy message: the next account


def relay_verdict(
    *, status: int, first_error_type: str, message: str, refreshed: bool
) -> RelayVerdict:
    """Classify an upstream Messages answer before any byte of it reaches the tool.

    `first_error_type` is the type of a 200 stream's first event when that is an `error`
    event; `refreshed` says this account was already refreshed for this request. A 529 is the
    service as a whole, not the account: it passes through like other 5xx and 4xx."""
    if status == 429 or (status == 200 and first_error_type == "rate_limit_error"):
        return RelayVerdict.RATE_LIMITED
    if status == 401:
        return RelayVerdict.TOKEN_REJECTED if refreshed else RelayVerdict.REFRESH_AND_RETRY
    if status == 403 and is_policy_message(message):
        return RelayVerdict.POLICY_BLOCKED
    return RelayVerdict.PASS


RELAY_MAX_ACCOUNTS = 3  # accounts tried per request (a 401's retry on one account not counted)


# Failures that say nothing about the credential: the provider was busy, down or garbled.
TRANSIENT_FAILURES = (
    FailureKind.RATE_LIMITED,
    FailureKind.SERVER_ERROR,
    FailureKind.NETWORK,
    FailureKind.MALFORMED,
)


# --- Due-ness (DESIGN.md 3.2) -------------------------------------------------------------------


@dataclass(frozen=True)
class PoolPolicy:
    refresh_lead: timedelta = timedelta(hours=4)
    quota_interval: timedelta = timedelta(minutes=5)
    policy_recheck: timedelta = timedelta(minutes=30)
    min_remaining_percent: float = 0.0
    fail_closed_on_unknown_quota: bool = True


@dataclass(frozen=True)
class Window:
    key: str  # five_hour, seven_day, seven_day_opus, model:<id or name>
    label: str
    utilization: float | None  # percent 0-100; None is unknown (never 0)
    resets_at: datetime | None
    checked_at: datetime | None = None
    # A scoped window limits one model (family) only: its id, else its display name ("Opus").
    model_id: str = ""
    model_name: str = ""
    # When the window was first seen exhausted in its current period (kept across polls).
    exhausted_since: datetime | None = None

    @property
    def scoped(self) -> bool:
        return bool(self.model_id or self.model_name)


MODEL_FAMILIES = ("opus", "sonnet", "haiku")


def model_family(model: str) -> str:
    """The family a model id names: the first of opus, sonnet, haiku found in it, else ""."""
    lowered = model.lower()
    return next((family for family in MODEL_FAMILIES if family in lowered), "")


def window_applies(window: Window, model: str | None) -> bool:
    """Does this window limit a request for `model` (None: no model known)? Account-wide windows
    always do; a scoped one only for its model id, or without an id, for the family its
    display name names (DESIGN.md 4.4)."""
    if not window.scoped:
        return True
    if not model:
        return False
    if window.model_id:
        return window.model_id == model
    family = model_family(model)
    return bool(family) and family in window.model_name.lower()


@dataclass(frozen=True)
class AccountState:
    """Everything eligibility and due-ness read, as plain values (built from a model row)."""

    is_oauth: bool = True
    enabled: bool = True
    disabled_reason: str = ""
    disabled_at: datetime | None = None
    has_access_token: bool = True
    has_refresh_token: bool = True
    access_expires_at: datetime | None = None
    refresh_backoff_until: datetime | None = None
    refresh_error_kind: str = ""
    refresh_error_message: str = ""
    refresh_error_status: int | None = None
    refresh_error_at: datetime | None = None
    needs_relogin: bool = False
    quota_checked_at: datetime | None = None
    # The last time relayed or reported answers' rate-limit headers updated the windows.
    windows_observed_at: datetime | None = None
    quota_backoff_until: datetime | None = None
    quota_failures: int = 0
    quota_error_message: str = ""
    policy_status: PolicyStatus = PolicyStatus.OK
    policy_message: str = ""
    policy_since: datetime | None = None
    policy_checked_at: datetime | None = None
    cooldown_until: datetime | None = None
    cooldown_reason: str = ""
    # Set when its stored secrets cannot be decrypted with the configured keys.
    credential_unreadable_since: datetime | None = None
    windows: tuple[Window, ...] = field(default_factory=tuple)


def _active(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


def access_token_valid(state: AccountState, now: datetime) -> bool:
    return (
        state.has_access_token
        and state.access_expires_at is not None
        and state.access_expires_at > now
    )


# A person's "refresh now" or "check quota now" still waits this long after a failure.
FORCE_MIN_GAP = timedelta(minutes=1)


def force_too_soon(last_error_at: datetime | None, now: datetime) -> bool:
    """A forced retry within a minute of the operation's last failure is refused."""
    return last_error_at is not None and last_error_at > now - FORCE_MIN_GAP


def refresh_due(state: AccountState, policy: PoolPolicy, now: datetime) -> bool:
    """Token refresh is due ahead of expiry, unless backing off or waiting for a re-login."""
    if not (state.is_oauth and state.enabled and state.has_refresh_token):
        return False
    if state.needs_relogin or _active(state.refresh_backoff_until, now):
        return False
    if not state.has_access_token or state.access_expires_at is None:
        return True
    return state.access_expires_at <= now + policy.refresh_lead


def _quota_seen_at(state: AccountState) -> datetime | None:
    """When the quota was last known: a poll, or rate-limit headers a relayed or reported
    answer carried (a busy account's windows stay live without polling)."""
    seen = [t for t in (state.quota_checked_at, state.windows_observed_at) if t is not None]
    return max(seen) if seen else None


def quota_due(state: AccountState, policy: PoolPolicy, now: datetime) -> bool:
    """Quota check is due after the interval (since the last poll or header observation),
    with a valid token, outside backoff, and for a policy-blocked account only after the
    policy recheck interval."""
    if not (state.is_oauth and state.enabled and access_token_valid(state, now)):
        return False
    if _active(state.quota_backoff_until, now):
        return False
    if state.policy_status == PolicyStatus.BLOCKED:
        checked = state.policy_checked_at
        return checked is None or checked <= now - policy.policy_recheck
    seen = _quota_seen_at(state)
    return state.quota_checked_at is None or seen is None or seen <= now - policy.quota_interval


def quota_next_check_at(state: AccountState, policy: PoolPolicy, now: datetime) -> datetime | None:
    """When the cycle checks this account's quota next (the mirror of quota_due); None when it
    cannot be said: disabled, no valid token (a refresh comes first), never checked."""
    if not (state.is_oauth and state.enabled and access_token_valid(state, now)):
        return None
    if _active(state.quota_backoff_until, now):
        return state.quota_backoff_until
    if state.policy_status == PolicyStatus.BLOCKED:
        checked = state.policy_checked_at
        return checked + policy.policy_recheck if checked else None
    seen = _quota_seen_at(state)
    return seen + policy.quota_interval if state.quota_checked_at and seen else None


# --- Eligibility (DESIGN.md 3.3) ----------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str
    since: datetime | None
    until: datetime | None
    clears_on: ClearsOn
    excludes: bool


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: tuple[Reason, ...]
    next_change_at: datetime | None  # the earliest `until`: when this verdict next changes

    @property
    def usable_at(self) -> datetime | None:
        """When every excluding reason has run out, if all of them end by time."""
        excluding = [r for r in self.reasons if r.excludes]
        if not excluding:
            return None
        if any(r.until is None for r in excluding):
            return None
        return max(r.until for r in excluding if r.until is not None)

    @property
    def first_reason(self) -> Reason | None:
        return self.reasons[0] if self.reasons else None


def window_remaining(window: Window) -> float | None:
    if window.utilization is None:
        return None
    return 100.0 - window.utilization


def window_exhausted(window: Window, policy: PoolPolicy, now: datetime) -> bool:
    """At 100%, or below the pool's minimum remaining, and not yet reset."""
    remaining = window_remaining(window)
    if remaining is None:
        return False
    if window.resets_at is not None and window.resets_at <= now:
        return False  # the window has reset since we looked
    return remaining <= 0 or remaining < policy.min_remaining_percent


# Two observations of one window name the same reset within this: the usage endpoint gives it
# to the microsecond, the rate-limit headers to the second. A new period resets hours later.
SAME_RESET = timedelta(minutes=1)


def exhausted_since(
    before: Window | None, after: Window, policy: PoolPolicy, now: datetime
) -> datetime | None:
    """When `after` (a new observation of a window) became exhausted: kept from the previous
    observation while the window stays exhausted in the same period, `now` when it just
    became so, None when it is not exhausted. So quota_exhausted's `since` does not move at
    every poll."""
    if not window_exhausted(after, policy, now):
        return None
    same_period = (
        before is not None
        and before.exhausted_since is not None
        and (
            before.resets_at is None
            or after.resets_at is None
            or abs(before.resets_at - after.resets_at) < SAME_RESET
        )
    )
    return before.exhausted_since if same_period and before is not None else now


def _fmt(when: datetime | None) -> str:
    """Absolute, in the one format of STYLE.md 15 (a message has no hover to carry it)."""
    return timefmt.utc(when) if when else "unknown"


def quota_stale(state: AccountState, policy: PoolPolicy, now: datetime) -> bool:
    """The snapshot is older than the interval and checks are failing: backing off, or the
    backoff ended and no check has succeeded since (failures are cleared only by a success)."""
    if state.quota_checked_at is None or state.quota_checked_at > now - policy.quota_interval:
        return False
    return _active(state.quota_backoff_until, now) or state.quota_failures > 0


def _credential_reasons(state: AccountState, now: datetime) -> list[Reason]:
    reasons: list[Reason] = []
    expired = not access_token_valid(state, now)
    if state.needs_relogin:
        reasons.append(
            Reason(
                ReasonCode.NEEDS_RELOGIN,
                f"Refresh token rejected ({state.refresh_error_message or 'invalid_grant'}): "
                "log in again.",
                state.refresh_error_at,
                None,
                ClearsOn.RELOGIN,
                True,
            )
        )
    elif _active(state.refresh_backoff_until, now):
        status = f"HTTP {state.refresh_error_status}" if state.refresh_error_status else "error"
        detail = f": {state.refresh_error_message}" if state.refresh_error_message else ""
        failing = (
            f"Access token rejected ({status} right after a refresh: {state.refresh_error_message})"
            if state.refresh_error_kind == FailureKind.ACCESS_REJECTED
            else f"Token refresh failing ({status} from the token endpoint{detail})"
        )
        reasons.append(
            Reason(
                ReasonCode.REFRESH_BACKOFF,
                f"{failing}; refreshing again after {_fmt(state.refresh_backoff_until)}.",
                state.refresh_error_at,
                state.refresh_backoff_until,
                ClearsOn.TIME,
                expired,
            )
        )
    elif expired:
        reasons.append(
            Reason(
                ReasonCode.TOKEN_EXPIRED,
                "Access token expired; a refresh is pending.",
                state.access_expires_at,
                None,
                ClearsOn.SUCCESS,
                True,
            )
        )
    return reasons


def _quota_reasons(
    state: AccountState, policy: PoolPolicy, now: datetime, model: str | None
) -> list[Reason]:
    reasons: list[Reason] = []
    if state.policy_status == PolicyStatus.BLOCKED:
        recheck = (
            f" (rechecked after {_fmt(state.policy_checked_at + policy.policy_recheck)})"
            if state.policy_checked_at
            else ""
        )
        reasons.append(
            Reason(
                ReasonCode.ORG_POLICY_BLOCKED,
                "Blocked by the organisation's policy: "
                f"{state.policy_message or 'usage endpoint answered 403'}{recheck}",
                state.policy_since,
                None,
                ClearsOn.SUCCESS,
                True,
            )
        )
    windows = [w for w in state.windows if window_applies(w, model)]
    for window in windows:
        if window_exhausted(window, policy, now):
            reasons.append(
                Reason(
                    ReasonCode.QUOTA_EXHAUSTED,
                    f"{window.label} window at {window.utilization:g}% "
                    + (
                        f"until it resets at {_fmt(window.resets_at)}."
                        if window.resets_at
                        else "(no reset time known; cleared by the next quota check)."
                    ),
                    window.exhausted_since,
                    window.resets_at,
                    ClearsOn.TIME if window.resets_at else ClearsOn.SUCCESS,
                    True,
                )
            )
    known = [w for w in windows if not w.scoped and w.utilization is not None]
    if state.policy_status != PolicyStatus.BLOCKED and (
        state.quota_checked_at is None or not known
    ):
        reasons.append(
            Reason(
                ReasonCode.QUOTA_UNKNOWN,
                "Quota not known yet"
                + (f" ({state.quota_error_message})" if state.quota_error_message else "")
                + ".",
                None,
                state.quota_backoff_until if _active(state.quota_backoff_until, now) else None,
                ClearsOn.SUCCESS,
                policy.fail_closed_on_unknown_quota,
            )
        )
    elif quota_stale(state, policy, now):
        backing_off = _active(state.quota_backoff_until, now)
        reasons.append(
            Reason(
                ReasonCode.QUOTA_STALE,
                f"Quota last checked at {_fmt(state.quota_checked_at)}; checks failing"
                + (f" ({state.quota_error_message})" if state.quota_error_message else "")
                + (
                    f", next after {_fmt(state.quota_backoff_until)}."
                    if backing_off
                    else ", next check due now."
                ),
                state.quota_checked_at,
                state.quota_backoff_until if backing_off else None,
                ClearsOn.SUCCESS,
                False,
            )
        )
    return reasons


def eligibility(
    state: AccountState, policy: PoolPolicy, now: datetime, *, model: str | None = None
) -> Verdict:
    """May this account be used now, for a request of `model` if one is known? If not, why
    and until when. A scoped window (one model family) counts only for that model's requests."""
    reasons: list[Reason] = []
    if not state.enabled:
        reasons.append(
            Reason(
                ReasonCode.DISABLED,
                f"Disabled: {state.disabled_reason}" if state.disabled_reason else "Disabled.",
                state.disabled_at,
                None,
                ClearsOn.MANUAL,
                True,
            )
        )
    if state.credential_unreadable_since is not None:
        reasons.append(
            Reason(
                ReasonCode.CREDENTIAL_UNREADABLE,
                "Its stored credential cannot be decrypted with the configured encryption keys "
                f"(since {_fmt(state.credential_unreadable_since)}): put back the key it was "
                "written with and run manage.py reencrypt, or log it in again.",
                state.credential_unreadable_since,
                None,
                ClearsOn.MANUAL,
                True,
            )
        )
    if state.is_oauth:
        reasons.extend(_credential_reasons(state, now))
        reasons.extend(_quota_reasons(state, policy, now, model))
    if _active(state.cooldown_until, now):
        reasons.append(
            Reason(
                ReasonCode.COOLDOWN,
                "Rate limited by a consumer's report"
                + (f" ({state.cooldown_reason})" if state.cooldown_reason else "")
                + f" until {_fmt(state.cooldown_until)}.",
                None,
                state.cooldown_until,
                ClearsOn.TIME,
                True,
            )
        )
    # Excluding reasons first, so the first reason is always the one that matters most.
    reasons.sort(key=lambda r: not r.excludes)
    if any(r.excludes for r in reasons):
        status = Status.EXCLUDED
    elif reasons:
        status = Status.DEGRADED
    else:
        status = Status.USABLE
    untils = [r.until for r in reasons if r.until is not None]
    degraded_backoff = any(r.code == ReasonCode.REFRESH_BACKOFF and not r.excludes for r in reasons)
    if degraded_backoff and state.access_expires_at is not None:
        untils.append(state.access_expires_at)  # the token runs out before the backoff ends
    return Verdict(status, tuple(reasons), min(untils) if untils else None)


# --- Limits per consumer key (a lead's) -------------------------------------------------------


class LimitKind(StrEnum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_5H = "tokens_per_5h"
    CONCURRENT_REQUESTS = "concurrent_requests"
    MODEL_FAMILIES = "model_families"


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    tokens_per_5h: int | None = None
    concurrent_requests: int | None = None
    model_families: tuple[str, ...] = ()  # empty: every family

    @property
    def any(self) -> bool:
        return bool(
            self.requests_per_minute is not None
            or self.tokens_per_5h is not None
            or self.concurrent_requests is not None
            or self.model_families
        )


TOKENS_WINDOW = timedelta(hours=5)
MODEL_REFUSED_RETRY = 3600  # seconds: a refused model family stays refused until a lead acts


def model_allowed(limits: KeyLimits, model: str | None) -> bool:
    """A key limited to some families may use a model of one of them; a request that names no
    model (or none of a known family) is refused under such a limit."""
    if not limits.model_families:
        return True
    return bool(model) and model_family(model or "") in limits.model_families


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def token_hours(now: datetime) -> list[datetime]:
    """The clock hours whose tokens count against a 5-hour limit now (the current one and the
    four before it)."""
    current = hour_of(now)
    return [current - timedelta(hours=i) for i in range(5)]


def tokens_retry_after(used_by_hour: dict[datetime, int], limit: int, now: datetime) -> int | None:
    """Seconds until a key whose tokens per clock hour are `used_by_hour` is back under its
    5-hour token limit, as old hours leave the window; None when it is under now."""
    hours = token_hours(now)
    total = sum(used_by_hour.get(h, 0) for h in hours)
    if total < limit:
        return None
    for oldest in reversed(hours):  # the oldest hour leaves first, at its end + 5 h
        total -= used_by_hour.get(oldest, 0)
        if total < limit:
            leaves_at = oldest + TOKENS_WINDOW
            return max(1, int((leaves_at - now).total_seconds()) + 1)
    return int(TOKENS_WINDOW.total_seconds())


def minute_retry_after(now: datetime) -> int:
    """Seconds until the next clock minute (a requests-per-minute counter starts afresh)."""
    return max(1, 60 - now.second)


# --- Forecast: burn rate and when the pool runs dry ------------------------------------------

BURN_LOOKBACK = timedelta(hours=1)
BURN_MIN_SPAN = timedelta(minutes=5)  # shorter spans say nothing about a pace
FORECAST_HORIZON = timedelta(days=8)
WINDOW_LENGTHS = {"five_hour": timedelta(hours=5)}
DEFAULT_WINDOW_LENGTH = timedelta(days=7)


@dataclass(frozen=True)
class QuotaObservation:
    observed_at: datetime
    utilization: float | None
    resets_at: datetime | None


@dataclass(frozen=True)
class WindowForecast:
    key: str
    utilization: float | None
    resets_at: datetime | None
    burn_per_hour: float | None  # percentage points per hour; None when unknown
    full_at: datetime | None  # at this pace; None when it never fills (no burn, unknown)
    full_before_reset: bool


def burn_rate(points: Iterable[QuotaObservation], now: datetime) -> float | None:
    """Percentage points per hour over the last hour, since the window last reset (a drop in
    utilization or a new reset time starts afresh). None: too few points to tell."""
    recent = sorted(
        (p for p in points if p.utilization is not None and now - p.observed_at <= BURN_LOOKBACK),
        key=lambda p: p.observed_at,
    )
    since_reset: list[QuotaObservation] = []
    for point in recent:
        if since_reset:
            last = since_reset[-1]
            assert point.utilization is not None
            assert last.utilization is not None
            moved = (
                point.resets_at is not None
                and last.resets_at is not None
                and point.resets_at - last.resets_at > timedelta(minutes=5)
            )
            if point.utilization < last.utilization or moved:
                since_reset = []
        since_reset.append(point)
    if len(since_reset) < 2:
        return None
    first, last = since_reset[0], since_reset[-1]
    span = last.observed_at - first.observed_at
    if span < BURN_MIN_SPAN:
        return None
    assert first.utilization is not None
    assert last.utilization is not None
    return max(0.0, (last.utilization - first.utilization) / (span / timedelta(hours=1)))


def window_forecast(key: str, points: Iterable[QuotaObservation], now: datetime) -> WindowForecast:
    """When a window fills at the pace of the last hour, and whether that is before it resets."""
    ordered = sorted(points, key=lambda p: p.observed_at)
    latest = ordered[-1] if ordered else None
    if latest is None or latest.utilization is None:
        return WindowForecast(key, None, latest.resets_at if latest else None, None, None, False)
    rate = burn_rate(ordered, now)
    resets_at = latest.resets_at
    full_at = None
    if latest.utilization >= 100:
        full_at = latest.observed_at
    elif rate:
        full_at = latest.observed_at + timedelta(hours=(100 - latest.utilization) / rate)
    before = full_at is not None and (resets_at is None or full_at < resets_at)
    return WindowForecast(key, latest.utilization, resets_at, rate, full_at, before)


@dataclass(frozen=True)
class AccountOutlook:
    """One account as the pool forecast sees it: usable now or back at a time, and its
    account-wide windows with their pace."""

    usable_now: bool
    returns_at: datetime | None  # an excluded account: when usable again by time (else None)
    windows: tuple[WindowForecast, ...]


class ForecastBasis(StrEnum):
    PACE = "pace"  # runs dry at the last hour's pace
    LASTS = "lasts"  # at that pace it does not run dry within the horizon
    NO_BURN = "no_burn"  # no quota used in the last hour
    DRY_NOW = "dry_now"  # no account is usable now
    UNKNOWN = "unknown"  # no account's windows are known


@dataclass(frozen=True)
class PoolForecast:
    runs_dry_at: datetime | None
    basis: ForecastBasis
    back_at: datetime | None  # after running dry, when the first account is usable again
    burn_per_hour: dict[str, float]  # summed over the accounts, per window key


@dataclass
class _Sim:
    """An account's windows during the pool simulation (mutable, private)."""

    back_at: datetime | None
    used: dict[str, float]
    resets: dict[str, datetime | None]


def _window_length(key: str) -> timedelta:
    return WINDOW_LENGTHS.get(key, DEFAULT_WINDOW_LENGTH)


def pool_forecast(accounts: Iterable[AccountOutlook], now: datetime) -> PoolForecast:
    """When fewer than one account will be usable at the current pace. The pool's burn per
    window (summed over its accounts) is spread evenly over the accounts usable at each moment;
    an account whose window fills waits for that window's reset; resets start windows at 0."""
    outlooks = list(accounts)
    burn: dict[str, float] = {}
    for outlook in outlooks:
        for w in outlook.windows:
            if w.burn_per_hour:
                burn[w.key] = burn.get(w.key, 0.0) + w.burn_per_hour
    sims = [
        _Sim(
            back_at=now if o.usable_now else o.returns_at,
            used={w.key: w.utilization for w in o.windows if w.utilization is not None},
            resets={w.key: w.resets_at for w in o.windows if w.utilization is not None},
        )
        for o in outlooks
    ]
    if not any(s.used for s in sims):
        return PoolForecast(None, ForecastBasis.UNKNOWN, None, burn)
    if not any(o.usable_now for o in outlooks):
        returns = [s.back_at for s in sims if s.back_at is not None]
        return PoolForecast(now, ForecastBasis.DRY_NOW, min(returns, default=None), burn)
    if not burn:
        return PoolForecast(None, ForecastBasis.NO_BURN, None, burn)
    return _simulate(sims, burn, now)


def _simulate(sims: list[_Sim], burn: dict[str, float], now: datetime) -> PoolForecast:
    t, end = now, now + FORECAST_HORIZON
    for _ in range(10_000):  # bounded: each step passes at least one event
        for sim in sims:  # windows whose reset has come start at 0
            for key, resets in sim.resets.items():
                while resets is not None and resets <= t:
                    sim.used[key] = 0.0
                    resets = resets + _window_length(key)
                sim.resets[key] = resets
        usable = [
            s
            for s in sims
            if s.back_at is not None and s.back_at <= t and all(u < 100 for u in s.used.values())
        ]
        events = [s.back_at for s in sims if s.back_at is not None and s.back_at > t]
        events += [r for s in sims for r in s.resets.values() if r is not None and r > t]
        if not usable:
            return PoolForecast(t, ForecastBasis.PACE, min(events, default=None), burn)
        share = {key: rate / len(usable) for key, rate in burn.items()}
        for sim in usable:
            for key, used in sim.used.items():
                if share.get(key):
                    events.append(t + timedelta(hours=(100 - used) / share[key]))
        step_to = min([*events, end])
        hours = (step_to - t) / timedelta(hours=1)
        for sim in usable:
            for key in sim.used:
                sim.used[key] = min(100.0, sim.used[key] + share.get(key, 0.0) * hours + 1e-9)
        t = step_to
        if t >= end:
            break
    return PoolForecast(None, ForecastBasis.LASTS, None, burn)
