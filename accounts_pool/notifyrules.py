"""The pure rules of notifications: what condition a verdict or a pool count is in, when a change
of condition becomes a message (flap damping, the hourly cap), how long a failed delivery waits,
how a webhook is signed, which addresses a webhook may not reach, and how a target is masked.

No ORM, no clock, no network: `now` and resolved addresses are arguments (DESIGN.md 3, STYLE 2).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from . import timefmt
from .state import ForecastBasis, PoolForecast, ReasonCode, Status, Verdict


class Kind(StrEnum):
    """What a lead picks per channel. Each is sent when it starts and when it ends."""

    NEEDS_RELOGIN = "needs_relogin"
    POLICY_BLOCKED = "policy_blocked"
    REFRESH_BACKOFF = "refresh_backoff"
    POOL_LOW = "pool_low"
    POOL_DRY = "pool_dry"
    POOL_FORECAST_DRY = "pool_forecast_dry"


ACCOUNT_KINDS = (Kind.NEEDS_RELOGIN, Kind.POLICY_BLOCKED, Kind.REFRESH_BACKOFF)
POOL_KINDS = (Kind.POOL_LOW, Kind.POOL_DRY, Kind.POOL_FORECAST_DRY)
TEST_KIND = "test"

KIND_TITLES = {
    Kind.NEEDS_RELOGIN: ("needs re-login", "logged in again"),
    Kind.POLICY_BLOCKED: ("blocked by organisation policy", "unblocked"),
    Kind.REFRESH_BACKOFF: ("token refresh backing off for over an hour", "token refresh recovered"),
    Kind.POOL_LOW: ("below its minimum usable accounts", "back at its minimum usable accounts"),
    Kind.POOL_DRY: ("dry: no usable account", "recovered: usable again"),
    Kind.POOL_FORECAST_DRY: (
        "forecast to run dry within the hour",
        "no longer forecast to run dry within the hour",
    ),
}


class Direction(StrEnum):
    STARTED = "started"
    ENDED = "ended"


# A refresh backoff is worth a message only when it keeps the token endpoint away this long.
LONG_BACKOFF = timedelta(hours=1)
# A condition must hold this long before it is announced (a flap that reverts sends nothing)...
DAMPING = timedelta(minutes=5)
# ...except one that only a person can end: it never reverts by itself, so waiting gains nothing.
UNDAMPED = frozenset({Kind.NEEDS_RELOGIN})
# At most one message per subject (account or pool), kind and direction in this time.
HOURLY_CAP = timedelta(hours=1)


def account_conditions(verdict: Verdict, now: datetime) -> dict[Kind, str]:
    """The account's notifiable conditions now, each with the reason in words."""
    found: dict[Kind, str] = {}
    for reason in verdict.reasons:
        if reason.code == ReasonCode.NEEDS_RELOGIN:
            found[Kind.NEEDS_RELOGIN] = reason.message
        elif reason.code == ReasonCode.ORG_POLICY_BLOCKED:
            found[Kind.POLICY_BLOCKED] = reason.message
        elif (
            reason.code == ReasonCode.REFRESH_BACKOFF
            and reason.until is not None
            and reason.until - now > LONG_BACKOFF
        ):
            found[Kind.REFRESH_BACKOFF] = reason.message
    return found


def usable_count(statuses: Iterable[Status]) -> tuple[int, int]:
    """(usable, total): degraded accounts are usable (with warnings)."""
    listed = list(statuses)
    return sum(1 for s in listed if s != Status.EXCLUDED), len(listed)


def pool_conditions(*, usable: int, total: int, minimum_usable: int) -> dict[Kind, str]:
    """Dry when none of its accounts is usable (an empty pool is not dry: nothing was lost);
    low when some are, but fewer than the pool's minimum (0 turns that off)."""
    if total and usable == 0:
        return {Kind.POOL_DRY: f"None of the pool's {total} accounts is usable."}
    if usable < minimum_usable:
        return {
            Kind.POOL_LOW: f"{usable} of {total} accounts usable; the pool's minimum is "
            f"{minimum_usable}."
        }
    return {}


# The forecast is news when the pool runs dry this soon at the last hour's pace.
FORECAST_WARNING = timedelta(hours=1)


def forecast_conditions(forecast: PoolForecast, now: datetime, *, warned: bool) -> dict[Kind, str]:
    """The pool runs dry within FORECAST_WARNING at the last hour's pace, with the reason in
    words. A pool the leads were warned about (`warned`: its start was announced) that then runs
    dry keeps the warning standing until it recovers, so the forecast does not "end" just as it
    comes true; a pool that runs dry unwarned is pool_dry's news alone."""
    if forecast.basis == ForecastBasis.DRY_NOW:
        if not warned:
            return {}
        back = f"; one is usable again {_at(forecast.back_at, now)}" if forecast.back_at else ""
        return {
            Kind.POOL_FORECAST_DRY: f"The pool ran dry as forecast: no account is usable{back}."
        }
    dry_at = forecast.runs_dry_at
    if forecast.basis != ForecastBasis.PACE or dry_at is None or dry_at - now > FORECAST_WARNING:
        return {}
    burn = ", ".join(
        f"{key.replace('_', '-')} window {rate:.0f} points an hour"
        for key, rate in sorted(forecast.burn_per_hour.items())
    )
    back = (
        f"; the first account is usable again {_at(forecast.back_at, now)}"
        if forecast.back_at
        else "; no account is known to be back before then"
    )
    return {
        Kind.POOL_FORECAST_DRY: f"At the last hour's pace ({burn} across the pool) every usable "
        f"account's quota is used up {_at(dry_at, now)}{back}."
    }


def _at(when: datetime, now: datetime) -> str:
    return f"at {timefmt.clock(when)} ({timefmt.distance(when, now)})"


@dataclass(frozen=True)
class Memory:
    """What is remembered of one subject and kind between evaluations."""

    observed: bool = False  # the condition at the last evaluation
    observed_since: datetime | None = None  # since when it has been so
    announced: bool = False  # what the leads were last told
    started_sent_at: datetime | None = None
    ended_sent_at: datetime | None = None


@dataclass(frozen=True)
class Step:
    memory: Memory
    send: Direction | None


def notification_step(memory: Memory, *, holds: bool, kind: Kind, now: datetime) -> Step:
    """One evaluation of one subject's condition: a message only when the condition differs
    from what was last announced, has held for DAMPING (not for UNDAMPED kinds), and no message
    of this direction went out in the last HOURLY_CAP. A capped message is not dropped: it goes
    once the hour is over, if the condition still differs from what was announced."""
    if holds != memory.observed or memory.observed_since is None:
        memory = replace(memory, observed=holds, observed_since=now)
    if memory.observed == memory.announced:
        return Step(memory, None)
    assert memory.observed_since is not None
    if kind not in UNDAMPED and now - memory.observed_since < DAMPING:
        return Step(memory, None)
    direction = Direction.STARTED if memory.observed else Direction.ENDED
    last = memory.started_sent_at if direction == Direction.STARTED else memory.ended_sent_at
    if last is not None and now - last < HOURLY_CAP:
        return Step(memory, None)
    if direction == Direction.STARTED:
        memory = replace(memory, announced=True, started_sent_at=now)
    else:
        memory = replace(memory, announced=False, ended_sent_at=now)
    return Step(memory, direction)


# --- Delivery -------------------------------------------------------------------------------------

RETRY_WINDOW = timedelta(hours=24)
RETRY_CAP = timedelta(hours=2)


def retry_delay(attempts: int, base: timedelta) -> timedelta:
    """Wait after the `attempts`-th failure: base, 2*base, 4*base ... at most RETRY_CAP."""
    steps = min(max(attempts, 1) - 1, 32)
    return min(base * (1 << steps), RETRY_CAP)


def next_attempt_at(
    *, created_at: datetime, attempts: int, now: datetime, base: timedelta
) -> datetime | None:
    """When to try again after a failure; None once the retry window is spent."""
    when = now + retry_delay(attempts, base)
    return when if when <= created_at + RETRY_WINDOW else None


SIGNATURE_HEADER = "X-AccountsPool-Signature"
TIMESTAMP_HEADER = "X-AccountsPool-Timestamp"
REPLAY_WINDOW = timedelta(minutes=5)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 under the channel's secret of `<timestamp>.<body>`."""
    signed = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


# --- Targets --------------------------------------------------------------------------------------


def address_refused(address: str) -> bool:
    """Loopback, private, link-local (cloud metadata), multicast, reserved or unspecified:
    nothing a webhook on the internet lives at."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def url_problem(url: str) -> str | None:
    """What is wrong with the URL itself (checked before its host is looked up)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return "Give an http:// or https:// URL with a host."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Give an http:// or https:// URL with a host."
    if parts.username or parts.password:
        return "A webhook URL may not carry a user name or password."
    return None


def target_problem(url: str, addresses: Iterable[str] | None, *, allow_private: bool) -> str | None:
    """Why a webhook URL may not be used, or None. `addresses` are what its host resolves to
    (None: it does not resolve)."""
    problem = url_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    if addresses is None:
        return f"The host {parts.hostname} does not resolve."
    if allow_private:
        return None
    refused = sorted({a for a in addresses if address_refused(a)})
    if refused:
        return (
            f"The host {parts.hostname} resolves to {', '.join(refused)}, a private, loopback or "
            "link-local address: webhooks may not reach internal networks "
            "(ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS allows it)."
        )
    return None


def mask_url(url: str) -> str:
    """Scheme and host only: the path of a Slack or webhook URL is its secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/…"


def mask_addresses(addresses: str) -> str:
    masked = []
    for address in split_addresses(addresses):
        local, _, domain = address.partition("@")
        masked.append(f"{local[:1]}…@{domain}")
    return ", ".join(masked)


def split_addresses(addresses: str) -> list[str]:
    return [a.strip() for a in addresses.replace(";", ",").split(",") if a.strip()]
