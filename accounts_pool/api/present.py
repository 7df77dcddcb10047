"""Model rows and verdicts as the API's response dicts (field names of DESIGN.md 4.3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from .. import selectors, state, usage_selectors
from ..charts import forecast_sentence
from ..models import Account, AccountEvent, ConsumerKey, Pool, QuotaWindow
from ..services.checkout import reasons_payload


def window(row: QuotaWindow) -> dict[str, Any]:
    return {
        "key": row.key,
        "label": row.label,
        "utilization": row.utilization,
        "resets_at": row.resets_at,
        "checked_at": row.checked_at,
        "source": row.source,
        # A per-model window: excludes the account only for that model's requests.
        "scope": {"model_id": row.model_id, "model_name": row.model_name} if row.scoped else None,
    }


def _last_error(kind: str, status: int | None, message: str, at: datetime | None) -> Any:
    if not kind:
        return None
    return {"kind": kind, "status": status, "message": message, "at": at}


def account_summary(row: selectors.AccountWithVerdict) -> dict[str, Any]:
    account, verdict = row.account, row.verdict
    return {
        "id": account.pk,
        "label": account.label,
        "kind": account.kind,
        "enabled": account.enabled,
        "status": verdict.status.value,
        "reasons": reasons_payload(verdict),
        "next_change_at": verdict.next_change_at,
        "windows": [window(w) for w in account.quota_windows.all()],
    }


def account_detail_by_id(account_id: int) -> dict[str, Any]:
    """An account's detail as the database has it now (after a write)."""
    account = (
        Account.objects.select_related("pool").defer(*Account.SECRET_FIELDS).get(pk=account_id)
    )
    return account_detail(account, timezone.now())


def account_detail(account: Account, now: datetime) -> dict[str, Any]:
    windows = list(account.quota_windows.all())
    verdict = account.verdict(now, windows=windows)
    return {
        "id": account.pk,
        "pool": account.pool.slug,
        "label": account.label,
        "kind": account.kind,
        "enabled": account.enabled,
        "disabled_reason": account.disabled_reason,
        "priority": account.priority,
        "email": account.email,
        "organization_name": account.organization_name,
        "created_at": account.created_at,
        "last_used_at": account.last_used_at,
        "status": verdict.status.value,
        "reasons": reasons_payload(verdict),
        "next_change_at": verdict.next_change_at,
        "refresh": {
            "expires_at": account.access_expires_at,
            "last_refreshed_at": account.last_refreshed_at,
            "backoff_until": account.refresh_backoff_until,
            "failures": account.refresh_failures,
            "last_error": _last_error(
                account.refresh_error_kind,
                account.refresh_error_status,
                account.refresh_error_message,
                account.refresh_error_at,
            ),
            "needs_relogin": account.needs_relogin,
            "interrupted_at": (
                account.refresh_sent_at
                if state.refresh_interrupted(
                    sent_at=account.refresh_sent_at,
                    claimed_until=account.refresh_claimed_until,
                    now=now,
                )
                else None
            ),
        },
        "quota": {
            "checked_at": account.quota_checked_at,
            "backoff_until": account.quota_backoff_until,
            "failures": account.quota_failures,
            "last_error": _last_error(
                account.quota_error_kind,
                account.quota_error_status,
                account.quota_error_message,
                account.quota_error_at,
            ),
            "windows": [window(w) for w in windows],
        },
        "policy": {
            "status": account.policy_status,
            "message": account.policy_message,
            "since": account.policy_since,
            "checked_at": account.policy_checked_at,
        },
        "cooldown": {"until": account.cooldown_until, "reason": account.cooldown_reason},
        "forecast": account_forecast(account, verdict, now),
    }


def account_forecast(account: Account, verdict: state.Verdict, now: datetime) -> dict[str, Any]:
    row = selectors.AccountWithVerdict(account, verdict)
    windows = usage_selectors.account_window_forecasts([row], now)[account.pk]
    return {
        "runs_dry_at": usage_selectors.account_runs_dry_at(windows),
        "windows": [window_forecast(w) for w in windows],
    }


def window_forecast(w: state.WindowForecast) -> dict[str, Any]:
    return {
        "key": w.key,
        "utilization": w.utilization,
        "resets_at": w.resets_at,
        "burn_per_hour": None if w.burn_per_hour is None else round(w.burn_per_hour, 3),
        "full_at": w.full_at,
        "full_before_reset": w.full_before_reset,
    }


def pool_forecast(forecast: state.PoolForecast, now: datetime) -> dict[str, Any]:
    return {
        "runs_dry_at": forecast.runs_dry_at,
        "basis": forecast.basis.value,
        "back_at": forecast.back_at,
        "burn_per_hour": {k: round(v, 3) for k, v in forecast.burn_per_hour.items()},
        "message": forecast_sentence(forecast, now),
    }


def pool_details(
    pools: list[tuple[Pool, list[selectors.AccountWithVerdict]]], now: datetime
) -> list[dict[str, Any]]:
    """Several pools, their forecasts read in one query."""
    forecasts = usage_selectors.pool_forecasts([rows for _, rows in pools], now)
    return [
        pool_detail(pool, rows, forecast=f, now=now)
        for (pool, rows), f in zip(pools, forecasts, strict=True)
    ]


def pool_detail(
    pool: Pool,
    rows: list[selectors.AccountWithVerdict],
    *,
    forecast: state.PoolForecast | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or timezone.now()
    if forecast is None:
        forecast = usage_selectors.pool_forecasts([rows], now)[0]
    return {
        "slug": pool.slug,
        "name": pool.name,
        "team": pool.team.slug,
        "provider": pool.provider,
        "routing": pool.routing,
        "refresh_lead_seconds": int(pool.refresh_lead.total_seconds()),
        "quota_interval_seconds": int(pool.quota_interval.total_seconds()),
        "policy_recheck_seconds": int(pool.policy_recheck_interval.total_seconds()),
        "min_remaining_percent": pool.min_remaining_percent,
        "fail_closed_on_unknown_quota": pool.fail_closed_on_unknown_quota,
        "minimum_usable": pool.minimum_usable,
        "counts": selectors.status_counts(rows),
        "next_change_at": selectors.next_change(rows),
        "accounts": [account_summary(row) for row in rows],
        "forecast": pool_forecast(forecast, now),
    }


def event(row: AccountEvent) -> dict[str, Any]:
    return {
        "id": row.pk,
        "at": row.at,
        "operation": row.operation,
        "outcome": row.outcome,
        "http_status": row.http_status,
        "message": row.message,
        "retry_after_seconds": row.retry_after_seconds,
        "until": row.until,
        "actor": row.actor,
    }


def limits(row: ConsumerKey) -> dict[str, Any]:
    set_ = row.limits
    return {
        "requests_per_minute": set_.requests_per_minute,
        "tokens_per_5h": set_.tokens_per_5h,
        "concurrent_requests": set_.concurrent_requests,
        "model_families": list(set_.model_families) or None,
    }


def key(row: ConsumerKey) -> dict[str, Any]:
    return {
        "id": row.pk,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
        "limits": limits(row),
    }
