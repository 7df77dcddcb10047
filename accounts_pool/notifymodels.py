"""Notification channels of a team, what each condition was last announced as, and the delivery
log (README "Notifications"). Imported by models.py, which Django reads."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import notifyrules
from .crypto import EncryptedTextField


class Channel(models.Model):
    class Type(models.TextChoices):
        WEBHOOK = "webhook", "Signed JSON webhook"
        SLACK = "slack", "Slack incoming webhook"
        EMAIL = "email", "Email"

    team = models.ForeignKey(
        "accounts_pool.Team",
        on_delete=models.CASCADE,
        related_name="channels",
        help_text="Whose conditions it hears about.",
    )
    name = models.CharField(max_length=100, help_text="Shown to people.")
    type = models.CharField(max_length=10, choices=Type.choices, help_text="How it is sent.")
    target = EncryptedTextField(
        help_text="The webhook URL, or comma-separated email addresses. Encrypted at rest."
    )
    target_masked = models.CharField(
        max_length=300, help_text="The target as shown to people (host only, or masked emails)."
    )
    signing_secret = EncryptedTextField(
        blank=True, help_text="Webhook only: the HMAC-SHA256 key, shown once. Encrypted at rest."
    )
    kinds = models.JSONField(
        default=list,
        help_text="Which kinds it receives: " + ", ".join(k.value for k in notifyrules.Kind) + ".",
    )
    enabled = models.BooleanField(default=True, help_text="A disabled channel is sent nothing.")
    daily_digest = models.BooleanField(
        default=False,
        help_text="Email only: also a daily summary of every pool and its excluded accounts.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The lead who made it.",
    )
    created_at = models.DateTimeField(auto_now_add=True, help_text="When it was made.")

    class Meta:
        ordering = ["team_id", "name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class NotificationSubject(models.Model):
    """One account's (or pool's) condition of one kind, as the evaluations last saw it and as
    the leads were last told (notifyrules.Memory)."""

    key = models.CharField(
        max_length=120, unique=True, help_text="pool:<id>:<kind> or account:<id>:<kind>."
    )
    pool = models.ForeignKey(
        "accounts_pool.Pool", on_delete=models.CASCADE, related_name="+", help_text="The pool."
    )
    account = models.ForeignKey(
        "accounts_pool.Account",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="The account (empty for a pool's condition).",
    )
    kind = models.CharField(max_length=30, help_text="The condition.")
    observed = models.BooleanField(default=False, help_text="Held at the last evaluation.")
    observed_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when it has held (or not)."
    )
    announced = models.BooleanField(default=False, help_text="What the leads were last told.")
    started_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="Last message that it started."
    )
    ended_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="Last message that it ended."
    )

    def __str__(self) -> str:
        return self.key

    def memory(self) -> notifyrules.Memory:
        return notifyrules.Memory(
            observed=self.observed,
            observed_since=self.observed_since,
            announced=self.announced,
            started_sent_at=self.started_sent_at,
            ended_sent_at=self.ended_sent_at,
        )


class Delivery(models.Model):
    """One message to one channel, tried until delivered or its retry window is spent."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        GAVE_UP = "gave_up", "Gave up"

    id = models.UUIDField(
        primary_key=True, default=uuid.uuid4, help_text="The message id (in the payload)."
    )
    channel = models.ForeignKey(
        Channel, on_delete=models.CASCADE, related_name="deliveries", help_text="Where it goes."
    )
    kind = models.CharField(max_length=30, help_text="What it is about (or test).")
    direction = models.CharField(max_length=10, blank=True, help_text="started or ended.")
    payload = models.JSONField(help_text="The message as sent (no secret in it).")
    created_at = models.DateTimeField(help_text="When the transition was seen.")
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, help_text="Where it is."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts so far.")
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When it is tried next (pending only)."
    )
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="A worker is sending it until then."
    )
    queued_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A task to send it is queued; not queued again before then.",
    )
    delivered_at = models.DateTimeField(null=True, blank=True, help_text="When it arrived.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.direction} to {self.channel_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """The delivery log: one row per attempt."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="log", help_text="The message."
    )
    channel = models.ForeignKey(
        Channel, on_delete=models.CASCADE, related_name="log", help_text="Where it went."
    )
    at = models.DateTimeField(help_text="When it was tried.")
    attempt = models.PositiveIntegerField(help_text="1 for the first try.")
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The HTTP (or SMTP) answer code, if any."
    )
    ok = models.BooleanField(help_text="Whether it was delivered.")
    error = models.CharField(max_length=300, blank=True, help_text="What failed (no secret).")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["channel", "-at"], name="delivery_log_channel_at_idx")]

    def __str__(self) -> str:
        return f"attempt {self.attempt} of {self.delivery_id}"
