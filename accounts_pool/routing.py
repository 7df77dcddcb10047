"""Balanced routing: which account spends its quota best. Pure rules over plain values (no ORM,
no clock). Priority and least-recently-used routing are an ORDER BY
(checkout_sql.candidates)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from . import state

# The lowest "hours to reset" a window counts with: a window about to reset is not infinitely
# attractive, just very.
MIN_HOURS = 0.25


@dataclass(frozen=True)
class Candidate:
    account_id: int
    status: state.Status
    last_used_at: datetime | None
    windows: tuple[state.Window, ...]


def spendable_per_hour(candidate: Candidate, policy: state.PoolPolicy, now: datetime) -> float:
    """Quota left to spend per hour until its reset, for the tightest window (0 when unknown).

    An account at 40% of a 5-hour window that resets in 1 hour can spend 60 points an hour; one
    at 10% whose window resets in 4 days can spend less than one. The tightest window binds."""
    rates = []
    for window in candidate.windows:
        if window.utilization is None or not state.window_applies(window, None):
            continue
        left = max(0.0, 100.0 - window.utilization - policy.min_remaining_percent)
        if window.resets_at is None or window.resets_at <= now:
            hours = 24 * 7.0  # no reset known: spread it over a week
        else:
            hours = max((window.resets_at - now).total_seconds() / 3600, MIN_HOURS)
        rates.append(left / hours)
    return min(rates) if rates else 0.0


def _lru_key(candidate: Candidate) -> tuple[float, int]:
    used = candidate.last_used_at.timestamp() if candidate.last_used_at else float("-inf")
    return (used, candidate.account_id)


def choose_balanced(
    candidates: Sequence[Candidate], *, policy: state.PoolPolicy, now: datetime
) -> Candidate | None:
    """Usable accounts first, then degraded; within a tier, the one with the most quota to spend
    per hour until its reset (spendable_per_hour), the least recently used on a tie."""
    for tier in (state.Status.USABLE, state.Status.DEGRADED):
        pool = [c for c in candidates if c.status == tier]
        if pool:
            return max(
                pool,
                key=lambda c: (spendable_per_hour(c, policy, now), [-x for x in _lru_key(c)]),
            )
    return None
