"""Forms for people. Secrets go in through write-only inputs and never render back."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import Account


class AccountOnboardForm(forms.ModelForm[Account]):
    """Add an OAuth account from tokens a person already has (e.g. Claude Code's credentials)."""

    refresh_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        strip=True,
        max_length=4096,
        help_text="The account's OAuth refresh token (sk-ant-ort01-…). Stored encrypted; it "
        "rotates on first use, so the tool it came from will need to log in again.",
    )
    access_token = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=True,
        max_length=4096,
        help_text="Optional: a current access token (sk-ant-oat01-…), with its expiry.",
    )
    access_expires_at = forms.DateTimeField(
        required=False, help_text="When the access token expires (needed with an access token)."
    )

    class Meta:
        model = Account
        fields = ("pool", "label")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if bool(cleaned.get("access_token")) != bool(cleaned.get("access_expires_at")):
            self.add_error(
                "access_expires_at", "Give the access token and its expiry together, or neither."
            )
        return cleaned
