"""Forms of the notification pages. A channel's target is a secret: typed in, never rendered
back (an edit leaves it empty to keep the stored one)."""

from __future__ import annotations

from django import forms

from . import notifyrules
from .models import Channel

KIND_CHOICES = [
    (kind.value, f"{kind.value.replace('_', ' ')}: {notifyrules.KIND_TITLES[kind][0]}")
    for kind in notifyrules.Kind
]


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Shown to people, e.g. “on-call Slack”.")
    type = forms.ChoiceField(choices=Channel.Type.choices)
    target = forms.CharField(
        max_length=2000,
        widget=forms.PasswordInput(render_value=False),
        help_text="The webhook or Slack incoming-webhook URL, or comma-separated email "
        "addresses. Stored encrypted and shown masked.",
    )
    kinds = forms.MultipleChoiceField(
        choices=KIND_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="Each is sent when it starts and when it ends.",
    )
    daily_digest = forms.BooleanField(
        required=False, help_text="Email only: also a summary of every pool each morning (UTC)."
    )


class ChannelEditForm(forms.Form):
    name = forms.CharField(max_length=100)
    target = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current target.",
    )
    kinds = forms.MultipleChoiceField(
        choices=KIND_CHOICES, widget=forms.CheckboxSelectMultiple, required=False
    )
    enabled = forms.BooleanField(required=False)
    daily_digest = forms.BooleanField(required=False, help_text="Email only.")


class MinimumUsableForm(forms.Form):
    minimum_usable = forms.IntegerField(
        min_value=0,
        max_value=100000,
        help_text="Notify when fewer accounts are usable (0: only when none is).",
    )
