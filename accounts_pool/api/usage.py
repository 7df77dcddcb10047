"""Usage and quota history: tokens by key, account, model and hour (JSON or CSV), and a
window's observations over time."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Query, Router
from ninja.errors import HttpError
from pydantic import Field, field_validator, model_validator

from .. import usage_selectors
from ..models import UsageHour
from . import access
from .schemas import ErrorOut, In, Out

router = Router(tags=["usage"])
ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}
MAX_PERIOD = timedelta(days=400)
GROUPS = ("key", "account", "model", "hour")


class UsageQuery(In):
    since: datetime | None = Field(None, description="Start (ISO 8601); default 24 hours ago.")
    until: datetime | None = Field(None, description="End, exclusive (ISO 8601); default now.")
    group_by: str = Field(
        "key", max_length=40, description="Any of key, account, model, hour, comma-separated."
    )
    format: Literal["json", "csv"] = "json"

    @field_validator("group_by")
    @classmethod
    def _groups(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        unknown = [p for p in parts if p not in GROUPS]
        if unknown or len(set(parts)) != len(parts):
            raise ValueError("group_by takes key, account, model, hour (each at most once)")
        return ",".join(parts)

    @model_validator(mode="after")
    def _period(self) -> UsageQuery:
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("since and until need a time zone (e.g. Z)")
        return self


class KeyRef(Out):
    id: int
    name: str


class AccountRef(Out):
    id: int
    label: str


class UsageRow(Out):
    key: KeyRef | None = None
    account: AccountRef | None = None
    model: str | None = None
    hour: datetime | None = None
    requests: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    responses_2xx: int
    responses_4xx: int
    responses_5xx: int
    duration_ms: int


class UsageOut(Out):
    since: datetime
    until: datetime
    group_by: list[str]
    rows: list[UsageRow]


class QuotaHistoryQuery(In):
    window: str | None = Field(None, min_length=1, max_length=120)
    since: datetime | None = Field(None, description="Default 7 days ago; at most 30 days kept.")


class QuotaPointOut(Out):
    window: str
    utilization: float | None
    resets_at: datetime | None
    observed_at: datetime
    source: str


class QuotaHistoryOut(Out):
    points: list[QuotaPointOut]


def _period(query: UsageQuery) -> tuple[datetime, datetime]:
    now = timezone.now()
    until = query.until or now
    since = query.since or until - timedelta(hours=24)
    if since >= until:
        raise HttpError(422, "since must be before until.")
    if until - since > MAX_PERIOD:
        raise HttpError(422, f"A period is at most {MAX_PERIOD.days} days.")
    return since, until


CSV_COLUMNS = (
    "key_id",
    "key_name",
    "account_id",
    "account_label",
    "model",
    "hour",
    *UsageHour.COUNTERS,
)


def _csv(rows: list[dict[str, Any]], slug: str, since: datetime, until: datetime) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        key, account = row.get("key") or {}, row.get("account") or {}
        hour = row.get("hour")
        writer.writerow(
            [
                key.get("id", ""),
                _cell(key.get("name", "")),
                account.get("id", ""),
                _cell(account.get("label", "")),
                _cell(row.get("model") or ""),
                hour.isoformat() if hour else "",
                *[row[name] for name in UsageHour.COUNTERS],
            ]
        )
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"usage-{slug}-{since:%Y%m%dT%H%M}-{until:%Y%m%dT%H%M}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _cell(text: str) -> str:
    """A name as a spreadsheet cell: text that would start a formula is quoted."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/pools/{pool}/usage", response={200: UsageOut, **ERRORS})
def pool_usage(request: HttpRequest, pool: str, query: Query[UsageQuery]) -> Any:
    """Tokens and requests of the pool's relayed and reported requests in [since, until),
    summed per combination of `group_by`; `format=csv` for a file. Members and leads."""
    found = access.pool_for(access.principal(request), pool)
    since, until = _period(query)
    groups = query.group_by.split(",") if query.group_by else []
    rows = usage_selectors.usage_rows(found, since=since, until=until, group_by=groups)
    if query.format == "csv":
        return _csv(rows, found.slug, since, until)
    return {"since": since, "until": until, "group_by": groups, "rows": rows}


@router.get("/accounts/{account_id}/quota-history", response={200: QuotaHistoryOut, **ERRORS})
def quota_history(
    request: HttpRequest, account_id: int, query: Query[QuotaHistoryQuery]
) -> dict[str, Any]:
    """Each observation of the account's windows (poll, relay, report), at most one per window
    per minute, oldest first."""
    account = access.account_for(access.principal(request), account_id)
    since = query.since or timezone.now() - timedelta(days=7)
    if since.tzinfo is None:
        raise HttpError(422, "since needs a time zone (e.g. Z).")
    points = usage_selectors.quota_points(account, window=query.window, since=since)
    return {
        "points": [
            {
                "window": p.window,
                "utilization": p.utilization,
                "resets_at": p.resets_at,
                "observed_at": p.observed_at,
                "source": p.source,
            }
            for p in points
        ]
    }
