"""Typed request and response bodies of the JSON API (DESIGN.md 4.3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

SLUG = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Label = Field(min_length=1, max_length=100)
Secret = Field(min_length=1, max_length=4096)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Out(BaseModel):
    """Every output. Views build outputs as plain data (api/present.py), which pydantic
    validates by itself; ninja's Schema would wrap each nested object in its getter for Django
    models, in Python, on every response."""

    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    """Every input rejects unknown fields, so a typo is a 422, not silently ignored, and NUL
    characters, which no database column can store."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


# --- Errors ---------------------------------------------------------------------------------------


class ErrorBody(Out):
    code: str
    message: str
    details: Any | None = None


class ErrorOut(Out):
    error: ErrorBody


# --- Teams ----------------------------------------------------------------------------------------


class TeamIn(In):
    name: str = Label
    slug: str = Field(min_length=1, max_length=50, pattern=SLUG)


class TeamOut(Out):
    slug: str
    name: str
    role: str | None
    created_at: datetime


class MemberIn(In):
    username: str = Field(min_length=1, max_length=150)
    role: Literal["lead", "member"]


class MemberOut(Out):
    username: str
    role: str


# --- Pools ----------------------------------------------------------------------------------------

Routing = Literal["priority", "least_recently_used", "balanced"]


class PoolPolicyIn(In):
    refresh_lead_seconds: int | None = Field(None, ge=60, le=86400)
    quota_interval_seconds: int | None = Field(None, ge=30, le=86400)
    policy_recheck_seconds: int | None = Field(None, ge=60, le=7 * 86400)
    min_remaining_percent: float | None = Field(None, ge=0, le=100)
    fail_closed_on_unknown_quota: bool | None = None
    minimum_usable: int | None = Field(
        None, ge=0, le=100000, description="Notify when fewer accounts are usable (0: off)."
    )


class PoolIn(PoolPolicyIn):
    name: str = Label
    slug: str = Field(min_length=1, max_length=50, pattern=SLUG)
    provider: Literal["anthropic"] = "anthropic"
    routing: Routing = "priority"


class PoolPatch(PoolPolicyIn):
    name: str | None = Field(None, min_length=1, max_length=100)
    routing: Routing | None = None


class ReasonOut(Out):
    code: str
    message: str
    since: datetime | None
    until: datetime | None
    clears_on: str


class WindowScopeOut(Out):
    model_id: str = Field(description="The model the window limits; empty when only named.")
    model_name: str = Field(description="The model's display name, e.g. Opus.")


class WindowOut(Out):
    key: str
    label: str
    utilization: float | None
    resets_at: datetime | None
    checked_at: datetime
    source: str
    scope: WindowScopeOut | None = Field(
        None,
        description="Set on a per-model window, which excludes the account only for requests "
        "of that model (family); account-wide windows have none.",
    )


class AccountSummaryOut(Out):
    id: int
    label: str
    kind: str
    enabled: bool
    status: str
    reasons: list[ReasonOut]
    next_change_at: datetime | None
    windows: list[WindowOut]


class WindowForecastOut(Out):
    key: str
    utilization: float | None
    resets_at: datetime | None
    burn_per_hour: float | None = Field(
        description="Percentage points per hour over the last hour; null when unknown."
    )
    full_at: datetime | None = Field(description="When it fills at that pace (null: never).")
    full_before_reset: bool


class PoolForecastOut(Out):
    runs_dry_at: datetime | None = Field(
        description="When fewer than one account will be usable at the last hour's pace."
    )
    basis: Literal["pace", "lasts", "no_burn", "dry_now", "unknown"]
    back_at: datetime | None = Field(description="After running dry, when one is usable again.")
    burn_per_hour: dict[str, float]
    message: str


class AccountForecastOut(Out):
    runs_dry_at: datetime | None = Field(description="When a window fills before its reset.")
    windows: list[WindowForecastOut]


class StatusCounts(Out):
    usable: int
    degraded: int
    excluded: int


class PoolOut(Out):
    slug: str
    name: str
    team: str
    provider: str
    routing: str
    refresh_lead_seconds: int
    quota_interval_seconds: int
    policy_recheck_seconds: int
    min_remaining_percent: float
    fail_closed_on_unknown_quota: bool
    minimum_usable: int
    counts: StatusCounts
    next_change_at: datetime | None
    accounts: list[AccountSummaryOut]
    forecast: PoolForecastOut | None = None


# --- Accounts -------------------------------------------------------------------------------------


class LastError(Out):
    kind: str
    status: int | None
    message: str
    at: datetime | None


class RefreshGroup(Out):
    expires_at: datetime | None
    last_refreshed_at: datetime | None
    backoff_until: datetime | None
    failures: int
    last_error: LastError | None
    needs_relogin: bool
    # A refresh request went out then and its worker stopped before storing the answer: the
    # provider may have rotated the token (the next refresh says so if it fails).
    interrupted_at: datetime | None = None


class QuotaGroup(Out):
    checked_at: datetime | None
    backoff_until: datetime | None
    failures: int
    last_error: LastError | None
    windows: list[WindowOut]


class PolicyGroup(Out):
    status: str
    message: str
    since: datetime | None
    checked_at: datetime | None


class CooldownGroup(Out):
    until: datetime | None
    reason: str


class AccountOut(Out):
    id: int
    pool: str
    label: str
    kind: str
    enabled: bool
    disabled_reason: str
    priority: int
    email: str
    organization_name: str
    created_at: datetime
    last_used_at: datetime | None
    status: str
    reasons: list[ReasonOut]
    next_change_at: datetime | None
    refresh: RefreshGroup
    quota: QuotaGroup
    policy: PolicyGroup
    cooldown: CooldownGroup
    forecast: AccountForecastOut | None = None


class AccountCreateIn(In):
    label: str = Label
    kind: Literal["oauth", "api_key"]
    refresh_token: str | None = Field(None, min_length=1, max_length=4096)
    access_token: str | None = Field(None, min_length=1, max_length=4096)
    expires_at: datetime | None = None
    api_key: str | None = Field(None, min_length=1, max_length=4096)
    base_url: str | None = Field(None, max_length=200, pattern=r"^https?://\S+$")

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> AccountCreateIn:
        if self.kind == "oauth":
            if not self.refresh_token:
                raise ValueError("an oauth account needs refresh_token")
            if self.api_key or self.base_url:
                raise ValueError("api_key and base_url belong to api_key accounts")
            if self.expires_at is not None and self.expires_at.tzinfo is None:
                raise ValueError("expires_at needs a time zone (ISO 8601 with Z or an offset)")
        else:
            if not self.api_key:
                raise ValueError("an api_key account needs api_key")
            if self.refresh_token or self.access_token or self.expires_at:
                raise ValueError("tokens belong to oauth accounts")
        return self


class OnboardOut(Out):
    outcome: str
    account: AccountOut


class AccountPatch(In):
    label: str | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = None
    disabled_reason: str | None = Field(None, min_length=1, max_length=200)
    priority: int | None = Field(None, ge=0, le=1_000_000)


class ImportOut(Out):
    imported: int
    accounts: list[AccountSummaryOut]


class OAuthStartIn(In):
    account_id: int | None = None


class OAuthStartOut(Out):
    authorize_url: str
    session: str
    expires_at: datetime


class OAuthCompleteIn(In):
    session: str = Field(min_length=1, max_length=200)
    code: str = Field(min_length=1, max_length=4096)
    label: str | None = Field(None, min_length=1, max_length=100)
    account_id: int | None = None


class EventOut(Out):
    id: int
    at: datetime
    operation: str
    outcome: str
    http_status: int | None
    message: str
    retry_after_seconds: int | None
    until: datetime | None
    actor: str


OperationName = Literal["token_refresh", "quota_check", "report", "onboarding", "admin"]


class EventFilters(In):
    page: int = Field(1, ge=1, le=100_000)
    page_size: int = Field(50, ge=1, le=200)
    operation: OperationName | None = None
    outcome: str | None = Field(None, min_length=1, max_length=40)


class ImportQuery(In):
    label: str = Field("", max_length=100, description="Label for the imported account(s).")


class EventPage(Out):
    items: list[EventOut]
    count: int
    page: int
    page_size: int


class ActionOut(Out):
    action: str
    outcome: str
    account: AccountOut


# --- Tools ----------------------------------------------------------------------------------------


class KeyIn(In):
    name: str = Label


class LimitsIO(In):
    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    tokens_per_5h: int | None = Field(None, ge=1, le=10**12)
    concurrent_requests: int | None = Field(None, ge=1, le=1000)
    model_families: list[Literal["opus", "sonnet", "haiku"]] | None = Field(
        None, max_length=3, description="Families it may use; null or [] is all."
    )


class KeyPatch(In):
    limits: LimitsIO


class KeyOut(Out):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    limits: LimitsIO | None = None


class KeyCreatedOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class CheckoutIn(In):
    session: str | None = Field(None, min_length=1, max_length=200)
    model: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="The model the credential is for (claude-opus-4-5): a per-model weekly "
        "window at its limit excludes an account only for that model, as in the relay.",
    )


class CheckoutAccount(Out):
    id: int
    label: str


class Credential(Out):
    kind: str
    access_token: str | None = None
    api_key: str | None = None
    expires_at: datetime | None


class CheckoutOut(Out):
    checkout_id: UUID
    account: CheckoutAccount
    credential: Credential


TokenCount = Field(0, ge=0, le=10**12)


class UsageIn(In):
    input_tokens: int = TokenCount
    output_tokens: int = TokenCount
    cache_creation_input_tokens: int = TokenCount
    cache_read_input_tokens: int = TokenCount


class ReportIn(In):
    status: int = Field(ge=100, le=599)
    retry_after: str | int | None = None
    headers: dict[str, str] | None = Field(None, max_length=100)
    message: str | None = Field(None, max_length=2000)
    usage: UsageIn | None = Field(None, description="The answer's `usage`: counted for the key.")
    model: str | None = Field(None, min_length=1, max_length=120)
    duration_ms: int | None = Field(None, ge=0, le=86_400_000)


class ReportOut(Out):
    outcome: str
    cooldown_until: datetime | None
    queued: list[str]
    windows_updated: list[str]
    duplicate: bool = False
    note: str = ""


# --- Notification channels ------------------------------------------------------------------------

ChannelType = Literal["webhook", "slack", "email"]
NotificationKind = Literal[
    "needs_relogin",
    "policy_blocked",
    "refresh_backoff",
    "pool_low",
    "pool_dry",
    "pool_forecast_dry",
]


class ChannelIn(In):
    name: str = Label
    type: ChannelType
    target: str = Field(
        min_length=1,
        max_length=2000,
        description="The webhook or Slack incoming-webhook URL, or comma-separated emails.",
    )
    kinds: list[NotificationKind] = Field(min_length=1, max_length=10)
    daily_digest: bool = Field(False, description="Email only: a daily summary too.")


class ChannelPatch(In):
    name: str | None = Field(None, min_length=1, max_length=100)
    target: str | None = Field(None, min_length=1, max_length=2000)
    kinds: list[NotificationKind] | None = Field(None, max_length=10)
    enabled: bool | None = None
    daily_digest: bool | None = None


class ChannelOut(Out):
    id: int
    name: str
    type: str
    target: str = Field(description="Masked: a URL's host only, emails' domains.")
    kinds: list[str]
    enabled: bool
    daily_digest: bool
    created_at: datetime
    signing_secret: str | None = Field(
        None, description="Webhook channels: the HMAC key, in the creation answer only."
    )


class DeliveryLogOut(Out):
    at: datetime
    delivery_id: UUID
    kind: str
    state: str
    attempt: int
    status_code: int | None
    ok: bool
    error: str


class DeliveryLogFilters(In):
    page: int = Field(1, ge=1, le=100_000)
    page_size: int = Field(50, ge=1, le=200)


class DeliveryLogPage(Out):
    items: list[DeliveryLogOut]
    count: int
    page: int
    page_size: int


class ChannelTestOut(Out):
    outcome: str
    status_code: int | None
    error: str


# --- Personal API tokens --------------------------------------------------------------------------


class ApiTokenIn(In):
    name: str = Label
    # Days until the token stops working; null: never (a token for a long-lived service).
    expires_in_days: int | None = Field(default=90, ge=1, le=366)


class ApiTokenOut(Out):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool


class ApiTokenCreated(ApiTokenOut):
    token: str  # shown this once; only its hash is kept
