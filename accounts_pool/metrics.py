"""Prometheus metrics: outcomes counted where they happen, account states read at scrape time.

Counters and histograms live in each process. Set PROMETHEUS_MULTIPROC_DIR (the same empty
folder for the web app and the workers of one machine) and /metrics adds them all up."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import selectors, state

REFRESH_OUTCOMES = Counter(
    "accounts_pool_refresh_total", "Token refresh attempts by outcome.", ["outcome"]
)
QUOTA_OUTCOMES = Counter(
    "accounts_pool_quota_checks_total", "Quota checks by outcome.", ["outcome"]
)
REPORTS = Counter("accounts_pool_reports_total", "Tool reports by outcome.", ["outcome"])
PUBLISH_FAILURES = Counter(
    "accounts_pool_publish_failures_total",
    "Tasks the broker refused (left to the cycle), by task.",
    ["task"],
)
CHECKOUT_SECONDS = Histogram(
    "accounts_pool_checkout_seconds",
    "Checkout latency in the web app.",
    ["result"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CYCLE_SECONDS = Histogram(
    "accounts_pool_cycle_seconds",
    "Duration of a dispatch or a synchronous cycle pass.",
    ["pass_"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300),
)


class HasOutcome(Protocol):
    @property
    def outcome(self) -> str: ...


P = ParamSpec("P")
R = TypeVar("R", bound=HasOutcome)


def counts_outcome(counter: Counter) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count each result's `outcome` on `counter`."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            result = function(*args, **kwargs)
            counter.labels(result.outcome).inc()
            return result

        return counted

    return decorate


class AccountStates(Collector):
    """Accounts by status and by reason, per pool, computed from the database at scrape time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        from .models import Account

        statuses = GaugeMetricFamily(
            "accounts_pool_accounts", "Accounts by status.", labels=["pool", "status"]
        )
        reasons = GaugeMetricFamily(
            "accounts_pool_account_reasons", "Accounts by reason code.", labels=["pool", "reason"]
        )
        by_status: dict[tuple[str, str], int] = {}
        by_reason: dict[tuple[str, str], int] = {}
        rows = selectors.accounts_with_verdicts(Account.objects.all(), now=self.now)
        for row in rows:
            pool = row.account.pool.slug
            key = (pool, row.verdict.status.value)
            by_status[key] = by_status.get(key, 0) + 1
            for reason in row.verdict.reasons:
                rkey = (pool, reason.code.value)
                by_reason[rkey] = by_reason.get(rkey, 0) + 1
        yield self._runs_dry(rows)
        for (pool, status), count in sorted(by_status.items()):
            statuses.add_metric([pool, status], count)
        for (pool, code), count in sorted(by_reason.items()):
            reasons.add_metric([pool, code], count)
        yield statuses
        yield reasons

    def _runs_dry(self, rows: list[selectors.AccountWithVerdict]) -> Metric:
        """Seconds until each pool runs dry at the last hour's pace: 0 when it is dry now,
        +Inf when it does not within the forecast's horizon; no sample while unknown."""
        from . import usage_selectors

        gauge = GaugeMetricFamily(
            "accounts_pool_pool_runs_dry_seconds",
            "Seconds until fewer than one account of the pool is usable at the last hour's pace.",
            labels=["pool"],
        )
        by_pool: dict[str, list[selectors.AccountWithVerdict]] = {}
        for row in rows:
            by_pool.setdefault(row.account.pool.slug, []).append(row)
        slugs = sorted(by_pool)
        forecasts = usage_selectors.pool_forecasts([by_pool[s] for s in slugs], self.now)
        for slug, forecast in zip(slugs, forecasts, strict=True):
            if forecast.basis in (state.ForecastBasis.NO_BURN, state.ForecastBasis.LASTS):
                gauge.add_metric([slug], math.inf)
            elif forecast.runs_dry_at is not None:
                seconds = (forecast.runs_dry_at - self.now).total_seconds()
                gauge.add_metric([slug], max(0.0, seconds))
        return gauge


def render(now: datetime) -> bytes:
    """The exposition text: this machine's process metrics, then the account states."""
    states = CollectorRegistry()
    states.register(AccountStates(now))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
    else:
        processes = REGISTRY
    return generate_latest(processes) + generate_latest(states)
