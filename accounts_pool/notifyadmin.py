"""Notification channels and their delivery log in the admin. A channel's URL or addresses and
its signing secret never reach an admin page; channels are made by leads (pages or API), where
the target is checked and the secret shown once."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Channel, DeliveryAttempt


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin[Channel]):
    list_display = ("name", "team", "type", "target_masked", "enabled", "created_at")
    list_filter = ("type", "enabled")
    list_select_related = ("team",)
    search_fields = ("name", "team__name")
    exclude = ("target", "signing_secret")
    readonly_fields = ("team", "type", "target_masked", "created_by", "created_at")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("target", "signing_secret")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin[DeliveryAttempt]):
    list_display = ("at", "channel", "kind", "attempt", "status_code", "ok", "error")
    list_filter = ("ok",)
    list_select_related = ("channel", "delivery")
    date_hierarchy = "at"

    @admin.display(description="Kind")
    def kind(self, row: DeliveryAttempt) -> str:
        return f"{row.delivery.kind} {row.delivery.direction}".strip()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
