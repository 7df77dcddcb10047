"""The operators' UI. Status and reasons come from state.eligibility, like everywhere else;
actions call one service each and report with message_user."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils import timezone

from . import selectors, state, timefmt
from .forms import AccountOnboardForm
from .models import Account, AccountEvent, Membership, Pool, QuotaWindow, Team
from .services.levers import (
    LeverError,
    account_check_quota_now,
    account_clear_backoff,
    account_disable,
    account_enable,
    account_refresh_now,
    account_update,
)
from .services.onboarding import account_create_oauth
from .services.quota import QuotaOutcome
from .services.refresh import RefreshOutcome

# The credential's secrets never reach an admin page: not as fields, not in a list.
LATEST_EVENTS = 20


class MembershipInline(admin.TabularInline[Membership, Team]):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin[Team]):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (MembershipInline,)


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin[Pool]):
    list_display = ("name", "slug", "team", "provider", "routing")
    list_filter = ("provider", "routing")
    search_fields = ("name", "slug", "team__name")
    prepopulated_fields = {"slug": ("name",)}


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.value, s.value.capitalize()) for s in state.Status]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        wanted = self.value()
        if not wanted:
            return queryset
        # Status depends on the clock, so it is computed, never stored.
        now = timezone.now()
        ids = [
            row.account.pk
            for row in selectors.accounts_with_verdicts(queryset, now=now)
            if row.verdict.status == wanted
        ]
        return queryset.filter(pk__in=ids)


class QuotaWindowInline(admin.TabularInline[QuotaWindow, Account]):
    model = QuotaWindow
    extra = 0
    can_delete = False
    fields = ("label", "utilization", "resets_at", "checked_at", "source")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LatestEventsFormSet(BaseInlineFormSet[AccountEvent, Account, Any]):
    def get_queryset(self) -> QuerySet[AccountEvent]:
        return super().get_queryset().order_by("-at", "-id")[:LATEST_EVENTS]


class LatestEventsInline(admin.TabularInline[AccountEvent, Account]):
    model = AccountEvent
    formset = LatestEventsFormSet
    extra = 0
    can_delete = False
    max_num = 0
    fields = ("at", "operation", "outcome", "http_status", "message", "until", "actor")
    readonly_fields = fields
    verbose_name_plural = f"Latest {LATEST_EVENTS} events (full history under Account events)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


# What a person edits in the admin form. Every other field is written by the cycle, the
# reports or a lever (which leaves a history row), never by a form: derived, not listed, so a
# new field is read-only until someone decides otherwise.
EDITABLE_FIELDS = ("label", "priority")
HIDDEN_FIELDS = (*Account.SECRET_FIELDS, "refresh_token_fingerprint", "relogin_required_for")
MACHINE_FIELDS = (
    *(
        f.name
        for f in Account._meta.concrete_fields
        if f.name not in (*EDITABLE_FIELDS, *HIDDEN_FIELDS)
    ),
    "needs_relogin",
    "status_and_reasons",
)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin[Account]):
    list_display = (
        "label",
        "pool",
        "kind",
        "status",
        "first_reason",
        "refresh_backoff",
        "policy_status",
        "token_expires",
    )
    # The list is sorted by what its arrow shows (the model's own order starts with pool_id,
    # which no column shows, so the arrow on "label" told the wrong story).
    ordering = ("label", "id")
    list_filter = (StatusFilter, "pool", "kind", "enabled", "policy_status")
    search_fields = ("label", "email", "pool__name")
    list_select_related = ("pool",)
    exclude = HIDDEN_FIELDS
    readonly_fields = MACHINE_FIELDS
    fieldsets = (
        (None, {"fields": ("pool", "label", "kind", "enabled", "disabled_reason", "priority")}),
        ("Status", {"fields": ("status_and_reasons",)}),
        (
            "Identity",
            {
                "fields": (
                    "provider_account_uuid",
                    "email",
                    "organization_uuid",
                    "organization_name",
                )
            },
        ),
        (
            "Token refresh",
            {
                "fields": (
                    "access_expires_at",
                    "last_refreshed_at",
                    "refresh_failures",
                    "refresh_backoff_until",
                    "refresh_error_kind",
                    "refresh_error_status",
                    "refresh_error_message",
                    "refresh_error_at",
                    "needs_relogin",
                    "credential_version",
                    "credential_unreadable_at",
                    "refresh_claimed_until",
                    "refresh_sent_at",
                )
            },
        ),
        (
            "Quota",
            {
                "fields": (
                    "quota_checked_at",
                    "quota_failures",
                    "quota_backoff_until",
                    "quota_error_kind",
                    "quota_error_status",
                    "quota_error_message",
                    "quota_error_at",
                )
            },
        ),
        (
            "Organisation policy",
            {"fields": ("policy_status", "policy_message", "policy_since", "policy_checked_at")},
        ),
        ("Cooldown", {"fields": ("cooldown_until", "cooldown_reason")}),
        ("Use", {"fields": ("last_used_at", "disabled_by", "disabled_at", "base_url")}),
    )
    inlines = (QuotaWindowInline, LatestEventsInline)
    actions = ("refresh_now", "check_quota_now", "clear_backoff", "disable", "enable")

    # Adding takes tokens through a write-only form and the onboarding service; the machine
    # fields never appear on it.
    add_fieldsets = (
        (None, {"fields": ("pool", "label", "refresh_token", "access_token", "access_expires_at")}),
    )

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = AccountOnboardForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else super().get_readonly_fields(request, obj)

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return () if obj is None else super().get_inlines(request, obj)

    def save_model(self, request: HttpRequest, obj: Account, form: Any, change: bool) -> None:
        if change:
            # Only what the form changed, through the service: a full save would write back
            # machine fields read before a concurrent refresh or check and undo it.
            changed = {f: form.cleaned_data[f] for f in form.changed_data}
            account_update(account=obj, actor=_actor(request), **changed)
            return
        created = account_create_oauth(
            pool=form.cleaned_data["pool"],
            label=form.cleaned_data["label"],
            refresh_token=form.cleaned_data["refresh_token"],
            access_token=form.cleaned_data.get("access_token") or "",
            expires_at=form.cleaned_data.get("access_expires_at"),
            actor=_actor(request),
        )
        obj.pk = created.pk
        obj._state.adding = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return (
            super()
            .get_queryset(request)
            .select_related("pool")
            .prefetch_related("quota_windows")
            .defer(*Account.SECRET_FIELDS)
        )

    def _verdict(self, obj: Account) -> state.Verdict:
        cached: state.Verdict | None = getattr(obj, "_verdict_cache", None)
        if cached is None:
            cached = obj.verdict(timezone.now())  # windows prefetched by get_queryset
            obj._verdict_cache = cached  # type: ignore[attr-defined]
        return cached

    @admin.display(description="Status")
    def status(self, obj: Account) -> str:
        return self._verdict(obj).status.value

    @admin.display(description="Why")
    def first_reason(self, obj: Account) -> str:
        reason = self._verdict(obj).first_reason
        if reason is None:
            return "-"
        until = f" (until {timefmt.plain(reason.until, timezone.now())})" if reason.until else ""
        return f"{reason.code}: {reason.message}{until}"

    @admin.display(description="Refresh backoff until", ordering="refresh_backoff_until")
    def refresh_backoff(self, obj: Account) -> str:
        return timefmt.plain(obj.refresh_backoff_until, timezone.now())

    @admin.display(description="Token expires", ordering="access_expires_at")
    def token_expires(self, obj: Account) -> str:
        return timefmt.plain(obj.access_expires_at, timezone.now())

    @admin.display(description="Status and every reason")
    def status_and_reasons(self, obj: Account) -> str:
        verdict = self._verdict(obj)
        lines = [verdict.status.value.upper()]
        for reason in verdict.reasons:
            until = f", until {timefmt.plain(reason.until, timezone.now())}" if reason.until else ""
            lines.append(f"• {reason.code}: {reason.message} (clears on {reason.clears_on}{until})")
        return "\n".join(lines)

    @admin.display(description="Needs re-login", boolean=True)
    def needs_relogin(self, obj: Account) -> bool:
        return obj.needs_relogin

    @admin.action(description="Refresh tokens now")
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            outcome = account_refresh_now(account=account, actor=_actor(request))
            level = messages.SUCCESS if outcome == RefreshOutcome.REFRESHED else messages.WARNING
            self.message_user(request, f"Account “{account}”: refresh {outcome}", level)

    @admin.action(description="Check quota now")
    def check_quota_now(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            outcome = account_check_quota_now(account=account, actor=_actor(request))
            level = messages.SUCCESS if outcome == QuotaOutcome.CHECKED else messages.WARNING
            self.message_user(request, f"Account “{account}”: quota {outcome}", level)

    @admin.action(description="Clear backoff and cooldown")
    def clear_backoff(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            cleared = account_clear_backoff(account=account, actor=_actor(request))
            self.message_user(
                request,
                f"Account “{account}”: {'backoff cleared' if cleared else 'nothing to clear'}",
            )

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            try:
                account_disable(
                    account=account, reason="disabled in the admin", actor=_actor(request)
                )
            except LeverError as exc:
                self.message_user(request, f"Account “{account}”: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Account “{account}”: disabled")

    @admin.action(description="Enable")
    def enable(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        for account in queryset:
            account_enable(account=account, actor=_actor(request))
            self.message_user(request, f"Account “{account}”: enabled")


@admin.register(AccountEvent)
class AccountEventAdmin(admin.ModelAdmin[AccountEvent]):
    list_display = ("at", "account", "operation", "outcome", "http_status", "until", "actor")
    list_filter = ("operation", "outcome")
    search_fields = ("account__label", "message", "actor")
    list_select_related = ("account",)
    date_hierarchy = "at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccountEvent]:
        # The account's name only: its secrets are never shown, and one that does not decrypt
        # must not fail the history.
        secrets = (f"account__{name}" for name in Account.SECRET_FIELDS)
        return super().get_queryset(request).defer(*secrets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Registered from their own module (one subject each).
from . import notifyadmin  # noqa: E402, F401
