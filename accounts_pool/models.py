"""Teams, pools, accounts and the history of every account.

An Account keeps separate groups of fields (DESIGN.md 3); each group is written by one code path
only. Secrets are stored encrypted (crypto.EncryptedTextField).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q

from . import state
from .crypto import EncryptedTextField


class Team(models.Model):
    name = models.CharField(max_length=100, help_text="Shown to people.")
    slug = models.SlugField(unique=True, help_text="Stable identifier used in URLs and the API.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the team was created.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead", "Lead"
        MEMBER = "member", "Member"

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="memberships", help_text="The team."
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        help_text="The person.",
    )
    role = models.CharField(
        max_length=10,
        choices=Role.choices,
        default=Role.MEMBER,
        help_text="Leads onboard accounts and act on them; members read.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the person joined.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.team}"


class Pool(models.Model):
    class Provider(models.TextChoices):
        ANTHROPIC = "anthropic", "Anthropic (Claude)"

    class Routing(models.TextChoices):
        PRIORITY = "priority", "Priority, then least recently used"
        LEAST_RECENTLY_USED = "least_recently_used", "Least recently used"
        BALANCED = "balanced", "Balanced by spendable quota"

    team = models.ForeignKey(
        Team, on_delete=models.CASCADE, related_name="pools", help_text="Owning team."
    )
    name = models.CharField(max_length=100, help_text="Shown to people.")
    slug = models.SlugField(unique=True, help_text="Stable identifier used in URLs and commands.")
    provider = models.CharField(
        max_length=20,
        choices=Provider.choices,
        default=Provider.ANTHROPIC,
        help_text="Which provider's accounts this pool holds.",
    )
    routing = models.CharField(
        max_length=30,
        choices=Routing.choices,
        default=Routing.PRIORITY,
        help_text="How checkout picks among usable accounts.",
    )
    refresh_lead = models.DurationField(
        default=timedelta(hours=4),
        help_text="Refresh an access token this long before it expires (tokens live about 8 h).",
    )
    quota_interval = models.DurationField(
        default=timedelta(minutes=5), help_text="Poll each account's quota this often."
    )
    policy_recheck_interval = models.DurationField(
        default=timedelta(minutes=30),
        help_text="Recheck an account blocked by organisation policy this often.",
    )
    min_remaining_percent = models.FloatField(
        default=0.0,
        help_text="Exclude an account when any window has less than this % left (100% used "
        "always excludes).",
    )
    fail_closed_on_unknown_quota = models.BooleanField(
        default=True,
        help_text="Exclude accounts whose quota is unknown (otherwise they are only degraded).",
    )
    minimum_usable = models.PositiveIntegerField(
        default=0,
        help_text="Notify the team's channels when fewer accounts than this are usable (0: "
        "only when none is).",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the pool was created.")

    # The columns `policy` reads (a read that needs only the policy selects these).
    POLICY_FIELDS: ClassVar[tuple[str, ...]] = (
        "refresh_lead",
        "quota_interval",
        "policy_recheck_interval",
        "min_remaining_percent",
        "fail_closed_on_unknown_quota",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def policy(self) -> state.PoolPolicy:
        return state.PoolPolicy(
            refresh_lead=self.refresh_lead,
            quota_interval=self.quota_interval,
            policy_recheck=self.policy_recheck_interval,
            min_remaining_percent=self.min_remaining_percent,
            fail_closed_on_unknown_quota=self.fail_closed_on_unknown_quota,
        )


class Account(models.Model):
    class Kind(models.TextChoices):
        OAUTH = "oauth", "OAuth subscription"
        API_KEY = "api_key", "API key"

    # Encrypted at rest; reads that do not hand a credential out leave them undecrypted.
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("access_token", "refresh_token", "api_key")

    # --- admin (people) ---
    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="accounts", help_text="The pool it serves."
    )
    label = models.CharField(max_length=100, help_text="A name people recognise.")
    kind = models.CharField(
        max_length=10, choices=Kind.choices, default=Kind.OAUTH, help_text="Credential kind."
    )
    enabled = models.BooleanField(default=True, help_text="Disabled accounts are never used.")
    disabled_reason = models.CharField(
        max_length=200, blank=True, help_text="Why a person disabled it."
    )
    disabled_by = models.CharField(max_length=150, blank=True, help_text="Who disabled it.")
    disabled_at = models.DateTimeField(null=True, blank=True, help_text="When it was disabled.")
    priority = models.IntegerField(
        default=100, help_text="Lower is used first under priority routing."
    )
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time checkout handed it out."
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was onboarded.")

    # --- identity (filled from the provider's answers) ---
    provider_account_uuid = models.CharField(
        max_length=64, blank=True, help_text="The provider's account id."
    )
    email = models.CharField(max_length=254, blank=True, help_text="The provider account's email.")
    organization_uuid = models.CharField(
        max_length=64, blank=True, help_text="The provider organisation id."
    )
    organization_name = models.CharField(
        max_length=200, blank=True, help_text="The provider organisation name."
    )

    # --- credential (token refresh, onboarding, re-login) ---
    access_token = EncryptedTextField(blank=True, help_text="Encrypted at rest.")
    refresh_token = EncryptedTextField(blank=True, help_text="Encrypted at rest.")
    api_key = EncryptedTextField(blank=True, help_text="Encrypted at rest (API-key accounts).")
    base_url = models.CharField(
        max_length=200,
        blank=True,
        validators=[URLValidator(schemes=["https", "http"])],
        help_text="API base URL for API-key accounts.",
    )
    access_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When the access token expires."
    )
    last_refreshed_at = models.DateTimeField(
        null=True, blank=True, help_text="Last successful token refresh."
    )
    refresh_token_fingerprint = models.CharField(
        max_length=64,
        blank=True,
        help_text="Keyed fingerprint (HMAC-SHA256) of the current refresh token: finds a token "
        "the team already holds without decrypting every row.",
    )
    credential_version = models.PositiveIntegerField(
        default=0, help_text="Bumped on every credential change."
    )
    credential_unreadable_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Since when its stored secrets cannot be decrypted with the configured "
        "ACCOUNTS_POOL_ENCRYPTION_KEYS (a key dropped before `manage.py reencrypt` ran): "
        "excluded until the key is back and reencrypt runs, or it is logged in again.",
    )
    access_from_401 = models.BooleanField(
        default=False,
        help_text="The access token came from a refresh that a 401 asked for (usage endpoint or "
        "a relayed request): another 401 on it backs the refresh off instead of refreshing "
        "again at once.",
    )
    refresh_claimed_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A worker holds the single-flight refresh claim until then.",
    )
    refresh_sent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A refresh request with the current refresh token went out then and no answer "
        "was stored yet. Set past its claim, the refresh was interrupted (a worker killed "
        "mid-call): the provider may have rotated the token without the app storing it.",
    )
    refresh_dispatched_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A refresh task is queued; not dispatched again before then.",
    )

    # --- refresh state (token refresh only) ---
    refresh_failures = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed refreshes."
    )
    refresh_backoff_until = models.DateTimeField(
        null=True, blank=True, help_text="No refresh is attempted before this time."
    )
    refresh_error_kind = models.CharField(
        max_length=20, blank=True, help_text="Kind of the last refresh error."
    )
    refresh_error_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="HTTP status of the last refresh error."
    )
    refresh_error_message = models.CharField(
        max_length=300, blank=True, help_text="The last refresh error (redacted)."
    )
    refresh_error_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last refresh error happened."
    )
    relogin_required_for = models.CharField(
        max_length=64,
        blank=True,
        help_text="Fingerprint of the refresh token the provider rejected (invalid_grant). "
        "Needs re-login while it matches the current refresh token.",
    )

    # --- quota state (quota check only) ---
    quota_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="Last successful quota check."
    )
    quota_failures = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed quota checks."
    )
    quota_backoff_until = models.DateTimeField(
        null=True, blank=True, help_text="No quota check before this time."
    )
    quota_error_kind = models.CharField(
        max_length=20, blank=True, help_text="Kind of the last quota error."
    )
    quota_error_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="HTTP status of the last quota error."
    )
    quota_error_message = models.CharField(
        max_length=300, blank=True, help_text="The last quota error (redacted)."
    )
    quota_error_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last quota error happened."
    )
    windows_observed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Last time relayed or reported answers' rate-limit headers updated the "
        "windows; the quota poll waits its interval from this too.",
    )
    quota_claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker is checking quota until then."
    )
    quota_dispatched_until = models.DateTimeField(
        null=True, blank=True, help_text="A quota task is queued; not dispatched again before then."
    )

    # --- quota policy (quota check and reports only) ---
    policy_status = models.CharField(
        max_length=10,
        choices=[(s.value, s.value) for s in state.PolicyStatus],
        default=state.PolicyStatus.OK,
        help_text="Organisation policy as the usage endpoint answers it.",
    )
    policy_message = models.CharField(
        max_length=300, blank=True, help_text="The provider's policy message."
    )
    policy_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when the policy status holds."
    )
    policy_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time the usage endpoint answered about policy."
    )

    # --- cooldown (reports, admin clear) ---
    cooldown_until = models.DateTimeField(
        null=True, blank=True, help_text="A tool reported a rate limit; unused until then."
    )
    cooldown_reason = models.CharField(
        max_length=200, blank=True, help_text="What the tool reported."
    )

    class Meta:
        # By column, not by relation: "pool" would join pool and team into every query.
        ordering = ["pool_id", "priority", "label"]
        indexes = [
            # Due-account queries of the cycle (selectors.accounts_due_*).
            models.Index(
                fields=["access_expires_at"],
                name="account_refresh_due_idx",
                condition=Q(enabled=True, kind="oauth"),
            ),
            models.Index(
                fields=["quota_checked_at"],
                name="account_quota_due_idx",
                condition=Q(enabled=True, kind="oauth"),
            ),
            models.Index(
                fields=["policy_checked_at"],
                name="account_policy_due_idx",
                condition=Q(enabled=True, kind="oauth", policy_status="blocked"),
            ),
            # Onboarding's "does the team already hold this refresh token?" (before any refresh).
            models.Index(fields=["refresh_token_fingerprint"], name="account_refresh_fp_idx"),
            # /healthz counts these on every probe; there are none in a healthy deployment.
            models.Index(
                fields=["credential_unreadable_at"],
                name="account_unreadable_idx",
                condition=Q(credential_unreadable_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def needs_relogin(self) -> bool:
        return bool(self.relogin_required_for) and (
            self.relogin_required_for == self.refresh_token_fingerprint
        )

    # The columns state_snapshot reads: a read for the rules loads these (a test loads only
    # them and sees state_snapshot make no query).
    STATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "kind",
        "enabled",
        "disabled_reason",
        "disabled_at",
        "access_expires_at",
        "refresh_token_fingerprint",
        "relogin_required_for",
        "refresh_backoff_until",
        "refresh_error_kind",
        "refresh_error_status",
        "refresh_error_message",
        "refresh_error_at",
        "quota_checked_at",
        "windows_observed_at",
        "quota_backoff_until",
        "quota_failures",
        "quota_error_message",
        "policy_status",
        "policy_message",
        "policy_since",
        "policy_checked_at",
        "cooldown_until",
        "cooldown_reason",
        "credential_unreadable_at",
    )

    # The columns routing orders and weighs candidates by (checkout_sql's ORDER BY, balanced
    # routing's least recently used).
    ROUTING_FIELDS: ClassVar[tuple[str, ...]] = ("priority", "last_used_at")

    # What is read of the account a checkout hands out, besides its credential: the tool's
    # answer (label), the Checkout row a 401 report is judged by (credential_version) and the
    # relay (access_from_401). The checkout read loads only these, STATE_FIELDS, ROUTING_FIELDS
    # and the credential; tests/test_checkout_columns.py fails when a checkout reads another.
    HANDOUT_FIELDS: ClassVar[tuple[str, ...]] = ("label", "credential_version", "access_from_401")

    def state_snapshot(
        self, windows: Sequence[QuotaWindow | state.Window] | None = None
    ) -> state.AccountState:
        """The plain-value view the pure rules read. Pass windows (rows, or already the rules'
        view of them) to avoid a query."""
        if windows is None:
            windows = list(self.quota_windows.all())
        return state.AccountState(
            is_oauth=self.kind == self.Kind.OAUTH,
            enabled=self.enabled,
            disabled_reason=self.disabled_reason,
            disabled_at=self.disabled_at,
            # Invariant kept by the credential writers: an expiry is stored iff a token is.
            has_access_token=self.access_expires_at is not None,
            has_refresh_token=bool(self.refresh_token_fingerprint),
            access_expires_at=self.access_expires_at,
            refresh_backoff_until=self.refresh_backoff_until,
            refresh_error_kind=self.refresh_error_kind,
            refresh_error_message=self.refresh_error_message,
            refresh_error_status=self.refresh_error_status,
            refresh_error_at=self.refresh_error_at,
            needs_relogin=self.needs_relogin,
            quota_checked_at=self.quota_checked_at,
            windows_observed_at=self.windows_observed_at,
            quota_backoff_until=self.quota_backoff_until,
            quota_failures=self.quota_failures,
            quota_error_message=self.quota_error_message,
            policy_status=state.PolicyStatus(self.policy_status),
            policy_message=self.policy_message,
            policy_since=self.policy_since,
            policy_checked_at=self.policy_checked_at,
            cooldown_until=self.cooldown_until,
            cooldown_reason=self.cooldown_reason,
            credential_unreadable_since=self.credential_unreadable_at,
            windows=tuple(w if isinstance(w, state.Window) else w.as_state() for w in windows),
        )

    def verdict(
        self,
        now: datetime,
        windows: list[QuotaWindow] | None = None,
        *,
        model: str | None = None,
    ) -> state.Verdict:
        """state.eligibility for this account under its pool's policy, for a request of
        `model` if known (windows as in state_snapshot: pass them, or they are read, from a
        prefetch if there is one)."""
        snapshot = self.state_snapshot(windows=windows)
        return state.eligibility(snapshot, self.pool.policy, now, model=model)


class QuotaWindow(models.Model):
    class Source(models.TextChoices):
        POLL = "poll", "Usage endpoint"
        REPORT = "report", "Tool report"
        RELAY = "relay", "Relayed answer"

    # The columns the state rules read, named as state.Window's fields (every read of windows
    # for the rules selects these).
    STATE_FIELDS: ClassVar[tuple[str, ...]] = tuple(
        f.name for f in dataclasses.fields(state.Window)
    )

    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="quota_windows", help_text="The account."
    )
    key = models.CharField(
        max_length=120, help_text="five_hour, seven_day, or a per-model weekly window."
    )
    label = models.CharField(max_length=120, help_text="Shown to people.")
    model_id = models.CharField(
        max_length=120,
        blank=True,
        help_text="For a per-model window: the model it limits. Such a window excludes the "
        "account only for that model's requests.",
    )
    model_name = models.CharField(
        max_length=120,
        blank=True,
        help_text="For a per-model window: the model's display name (Opus), which names the "
        "family it limits when no model id is given.",
    )
    utilization = models.FloatField(
        null=True, blank=True, help_text="Percent used, 0-100; empty when unknown."
    )
    resets_at = models.DateTimeField(null=True, blank=True, help_text="When the window resets.")
    checked_at = models.DateTimeField(help_text="When this observation was made.")
    exhausted_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the window was first seen exhausted in its current period.",
    )
    source = models.CharField(
        max_length=10, choices=Source.choices, default=Source.POLL, help_text="Who observed it."
    )

    class Meta:
        ordering = ["account_id", "key"]
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="quota_window_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.label}: {self.utilization}%"

    def as_state(self) -> state.Window:
        return state.Window(**{name: getattr(self, name) for name in self.STATE_FIELDS})

    @property
    def scoped(self) -> bool:
        return bool(self.model_id or self.model_name)


class AccountEvent(models.Model):
    """One row per state transition: the error history of an account."""

    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="events", help_text="The account."
    )
    at = models.DateTimeField(help_text="When it happened.")
    operation = models.CharField(
        max_length=20,
        choices=[(o.value, o.value) for o in state.Operation],
        help_text="Which operation: token_refresh, quota_check, report, onboarding, admin, "
        "decryption (a stored secret found unreadable).",
    )
    outcome = models.CharField(max_length=40, help_text="What happened, e.g. rejected, recovered.")
    http_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The provider's HTTP status, if any."
    )
    message = models.CharField(max_length=300, blank=True, help_text="Short, redacted.")
    retry_after_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Retry-After the provider sent, in seconds."
    )
    until = models.DateTimeField(
        null=True, blank=True, help_text="The until this event set (backoff, cooldown)."
    )
    actor = models.CharField(
        max_length=150, blank=True, help_text="Who: a user, a consumer key, or the cycle."
    )

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["account", "-at"], name="event_account_at_idx"),
            models.Index(fields=["at"], name="event_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.operation} {self.outcome}"


class ApiToken(models.Model):
    """A personal API token: acts with its user's team roles. Only a hash is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="Whose roles the token acts with.",
    )
    name = models.CharField(max_length=100, help_text="What the token is for.")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was created.")
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time it authenticated."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="When it was revoked.")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When it stops working (empty: never)."
    )

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ConsumerKey(models.Model):
    """A pool's key for tools: check out credentials and report answers, for one pool only.
    Only a hash is stored; the key is shown once."""

    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="consumer_keys", help_text="Its only pool."
    )
    name = models.CharField(max_length=100, help_text="Which tool or machine uses it.")
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who created it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was created.")
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time it authenticated."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="When it was revoked.")
    # --- limits (set by a lead; empty is no limit) ---
    limit_requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests (relayed or checkouts) per clock minute."
    )
    limit_tokens_per_5h = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens (input, output and cache) over the last five clock hours.",
    )
    limit_concurrent_requests = models.PositiveIntegerField(
        null=True, blank=True, help_text="Relayed requests in flight at once."
    )
    limit_model_families = models.CharField(
        max_length=60,
        blank=True,
        help_text="Comma-separated model families it may use (opus, sonnet, haiku); empty is all.",
    )

    class Meta:
        ordering = ["pool_id", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def actor(self) -> str:
        return f"key:{self.name}:{self.prefix}"

    @property
    def limits(self) -> state.KeyLimits:
        families = tuple(f for f in self.limit_model_families.split(",") if f)
        return state.KeyLimits(
            requests_per_minute=self.limit_requests_per_minute,
            tokens_per_5h=self.limit_tokens_per_5h,
            concurrent_requests=self.limit_concurrent_requests,
            model_families=families,
        )


class OAuthLogin(models.Model):
    """A pending PKCE login: valid 10 minutes, completed at most once."""

    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="oauth_logins", help_text="Target pool."
    )
    session_hash = models.CharField(
        max_length=64, unique=True, help_text="SHA-256 of the opaque session handed out."
    )
    state = models.CharField(max_length=64, help_text="The OAuth state the callback must echo.")
    verifier = EncryptedTextField(help_text="PKCE code verifier, encrypted at rest.")
    account = models.ForeignKey(
        Account,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Set when re-authorizing an existing account in place.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Who started the login.",
    )
    created_at = models.DateTimeField(help_text="When the login started.")
    expires_at = models.DateTimeField(help_text="The login must complete before this.")
    completed_at = models.DateTimeField(
        null=True, blank=True, help_text="When it completed (a session is used once)."
    )

    def __str__(self) -> str:
        return f"login to {self.pool} started {self.created_at:%Y-%m-%d %H:%M}"


class Checkout(models.Model):
    """A credential handed to a tool; reports refer to it."""

    id = models.UUIDField(primary_key=True, help_text="The checkout id given to the tool.")
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="checkouts", help_text="Account handed out."
    )
    consumer_key = models.ForeignKey(
        ConsumerKey,
        on_delete=models.CASCADE,
        related_name="checkouts",
        help_text="The key that asked.",
        db_index=False,  # checkout_session_idx starts with it: one index less to write per checkout
    )
    session_hash = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of the tool's session id, for stickiness."
    )
    at = models.DateTimeField(help_text="When it was handed out.")
    credential_version = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The account's credential version handed out: a 401 report rejects only this "
        "one (unknown for checkouts recorded before it was kept).",
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["consumer_key", "session_hash", "-at"], name="checkout_session_idx"
            )
        ]

    def __str__(self) -> str:
        return f"checkout {self.id} of {self.account_id}"


class CheckoutReport(models.Model):
    """One report a tool made about a checkout: a retried report (the same Idempotency-Key, or
    without one the same status) finds its row and records nothing again."""

    checkout = models.ForeignKey(
        Checkout, on_delete=models.CASCADE, related_name="reports", help_text="What it reports on."
    )
    key = models.CharField(
        max_length=64, help_text="SHA-256 of the Idempotency-Key header, else 'status:<code>'."
    )
    outcome = models.CharField(max_length=20, help_text="What the first report did.")
    cooldown_until = models.DateTimeField(
        null=True, blank=True, help_text="The cooldown the first report set."
    )
    at = models.DateTimeField(help_text="When it was first recorded.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["checkout", "key"], name="checkout_report_once")
        ]

    def __str__(self) -> str:
        return f"report {self.key} on {self.checkout_id}"


class PoolInvite(models.Model):
    """A single-use link, valid 24 hours, that lets a team member add their own subscription to
    a pool through the PKCE login without being a lead. Only a hash of the link is stored."""

    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="invites", help_text="Target pool."
    )
    token_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the link.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="The lead who made it.",
    )
    created_at = models.DateTimeField(help_text="When it was made.")
    expires_at = models.DateTimeField(help_text="Unusable after this.")
    used_at = models.DateTimeField(null=True, blank=True, help_text="When it was used.")
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who used it.",
    )
    account = models.ForeignKey(
        Account,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The account it added.",
    )

    def __str__(self) -> str:
        return f"invite to {self.pool} by {self.created_by}"


class UsageHour(models.Model):
    """Tokens and requests summed per consumer key, account, model and clock hour: written in
    batches by each process (services/usage.py), never a row per request, never any content."""

    # The summed columns: what a process adds up between writes and what a report sums.
    COUNTERS: ClassVar[tuple[str, ...]] = (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "responses_2xx",
        "responses_4xx",
        "responses_5xx",
        "duration_ms",
    )

    pool = models.ForeignKey(
        Pool, on_delete=models.CASCADE, related_name="+", help_text="The key's and account's pool."
    )
    consumer_key = models.ForeignKey(
        ConsumerKey, on_delete=models.CASCADE, related_name="+", help_text="Who asked."
    )
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="+", help_text="Which account served."
    )
    model = models.CharField(max_length=120, blank=True, help_text="The request's model id.")
    hour = models.DateTimeField(help_text="The clock hour (UTC) the requests ended in.")
    requests = models.PositiveBigIntegerField(default=0, help_text="Requests counted.")
    input_tokens = models.PositiveBigIntegerField(default=0, help_text="Input tokens.")
    output_tokens = models.PositiveBigIntegerField(default=0, help_text="Output tokens.")
    cache_creation_input_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Input tokens written to the prompt cache."
    )
    cache_read_input_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Input tokens read from the prompt cache."
    )
    responses_2xx = models.PositiveBigIntegerField(default=0, help_text="Answers 200-299.")
    responses_4xx = models.PositiveBigIntegerField(default=0, help_text="Answers 400-499.")
    responses_5xx = models.PositiveBigIntegerField(default=0, help_text="Answers 500-599.")
    duration_ms = models.PositiveBigIntegerField(
        default=0, help_text="Summed duration (start to last byte), milliseconds."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer_key", "account", "model", "hour"], name="usage_hour_unique"
            )
        ]
        indexes = [models.Index(fields=["pool", "hour"], name="usage_pool_hour_idx")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h key {self.consumer_key_id} account {self.account_id}"


class QuotaPoint(models.Model):
    """One observation of a window (poll, relayed headers, report), at most one per window per
    minute, kept 30 days: the window over time (charts, burn rate)."""

    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="+", help_text="The account."
    )
    window = models.CharField(max_length=120, help_text="The window key (five_hour, ...).")
    minute = models.DateTimeField(help_text="The observation's minute: one point per minute.")
    observed_at = models.DateTimeField(help_text="When it was observed.")
    utilization = models.FloatField(null=True, blank=True, help_text="Percent used, 0-100.")
    resets_at = models.DateTimeField(null=True, blank=True, help_text="When the window resets.")
    source = models.CharField(
        max_length=10, choices=QuotaWindow.Source.choices, help_text="Who observed it."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "window", "minute"], name="quota_point_unique_minute"
            )
        ]
        indexes = [models.Index(fields=["observed_at"], name="quota_point_observed_idx")]

    def __str__(self) -> str:
        return f"{self.window} {self.utilization}% at {self.observed_at:%Y-%m-%d %H:%M}"


class KeyLimitEvent(models.Model):
    """A consumer key went over one of its limits (throttled to one row per key and limit per
    minute): what a lead reads to tune limits."""

    consumer_key = models.ForeignKey(
        ConsumerKey, on_delete=models.CASCADE, related_name="limit_events", help_text="The key."
    )
    at = models.DateTimeField(help_text="When.")
    limit = models.CharField(max_length=30, help_text="Which limit.")
    message = models.CharField(max_length=300, help_text="What the tool was told.")
    retry_after_seconds = models.PositiveIntegerField(help_text="The Retry-After it was given.")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["consumer_key", "-at"], name="key_limit_event_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.limit}"


# Notification channels and their delivery log live in their own module (one subject each).
from .notifymodels import Channel, Delivery, DeliveryAttempt, NotificationSubject  # noqa: E402

__all__ = [
    "Account",
    "AccountEvent",
    "ApiToken",
    "Channel",
    "Checkout",
    "ConsumerKey",
    "Delivery",
    "DeliveryAttempt",
    "KeyLimitEvent",
    "Membership",
    "NotificationSubject",
    "OAuthLogin",
    "Pool",
    "PoolInvite",
    "QuotaPoint",
    "QuotaWindow",
    "Team",
    "UsageHour",
]
