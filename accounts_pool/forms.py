"""Forms for people. Secrets go in through write-only inputs and never render back."""

from __future__ import annotations

from typing import Any

from django import forms

from .jsoninput import UnreadableJson, json_loads
from .models import Account, Membership, Pool
from .services.errors import Conflict
from .services.onboarding import refuse_held_refresh_token


class SecretField(forms.CharField):
    """A token typed or pasted by a person: a write-only input that never renders back."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.PasswordInput(render_value=False))
        kwargs.setdefault("max_length", 4096)
        super().__init__(strip=True, **kwargs)


def _token_with_expiry(form: forms.BaseForm, cleaned: dict[str, Any], expiry: str) -> None:
    """An access token is given with its expiry, or neither is. An expiry that did not parse
    already has its own error: saying "give them together" then would be wrong."""
    if expiry in form.errors:
        return
    if cleaned.get("access_token") and not cleaned.get(expiry):
        form.add_error(expiry, "Give the expiry of the access token too, or leave the token out.")
    elif cleaned.get(expiry) and not cleaned.get("access_token"):
        form.add_error(expiry, "An expiry needs the access token it belongs to.")


class AccountOnboardForm(forms.ModelForm[Account]):
    """Add an OAuth account from tokens a person already has (e.g. Claude Code's credentials)."""

    refresh_token = SecretField(
        help_text="The account's OAuth refresh token (sk-ant-ort01-…). Stored encrypted; it "
        "rotates on first use, so the tool it came from will need to log in again.",
    )
    access_token = SecretField(
        required=False,
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
        _token_with_expiry(self, cleaned, "access_expires_at")
        pool, refresh_token = cleaned.get("pool"), cleaned.get("refresh_token")
        if pool is not None and refresh_token:
            try:  # said on the form; the service refuses it again when saving
                refuse_held_refresh_token(pool.team_id, refresh_token)
            except Conflict as exc:
                self.add_error("refresh_token", exc.message)
        return cleaned


class PasteTokensForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="A name people recognise.")
    refresh_token = SecretField(help_text="sk-ant-ort01-… (checked with the provider first).")
    access_token = SecretField(required=False, help_text="Optional, with its expiry.")
    expires_at = forms.DateTimeField(
        required=False, help_text="When the access token expires, e.g. 2026-11-29 18:00 (UTC)."
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        _token_with_expiry(self, cleaned, "expires_at")
        return cleaned


MAX_UPLOAD_BYTES = 256 * 1024


class UploadCredentialsForm(forms.Form):
    label = forms.CharField(
        max_length=100, required=False, help_text="For a single-account file (Claude Code)."
    )
    file = forms.FileField(
        help_text="~/.claude/.credentials.json, or an anthropic-auth accounts file."
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError("The file is larger than 256 KiB.")
        try:
            return json_loads(upload.read())
        except UnreadableJson as exc:
            raise forms.ValidationError(f"The file is {exc}.") from None


class PasteCodeForm(forms.Form):
    code = forms.CharField(
        max_length=4096,
        strip=True,
        help_text="The code shown after you logged in (CODE#STATE), or the whole callback URL.",
    )
    label = forms.CharField(max_length=100, required=False, help_text="Name for the new account.")


class DisableForm(forms.Form):
    reason = forms.CharField(max_length=200, strip=True, help_text="Why (shown to the team).")


class ConsumerKeyForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, help_text="Which tool or machine uses it.")


class KeyLimitsForm(forms.Form):
    """A lead's limits for one consumer key; an empty field is no limit."""

    requests_per_minute = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=1_000_000,
        help_text="Relayed requests and checkouts.",
    )
    tokens_per_5h = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=10**12,
        label="Tokens per 5 hours",
        help_text="Input, output and cache tokens over the last five clock hours.",
    )
    concurrent_requests = forms.IntegerField(
        required=False, min_value=1, max_value=1000, help_text="Relayed requests in flight at once."
    )
    model_families = forms.MultipleChoiceField(
        required=False,
        choices=[(f, f.capitalize()) for f in ("opus", "sonnet", "haiku")],
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every family.",
    )


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, help_text="Shown to people.")
    slug = forms.SlugField(max_length=50, help_text="Used in URLs: letters, digits, - and _.")

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        if slug == "new":  # /teams/new/ is the page that creates a team
            raise forms.ValidationError("This slug is reserved; choose another.")
        return slug


class PoolForm(forms.ModelForm[Pool]):
    """A pool and its policy; the help under each field is the model's."""

    class Meta:
        model = Pool
        fields: tuple[str, ...] = (
            "name",
            "slug",
            "routing",
            "refresh_lead",
            "quota_interval",
            "policy_recheck_interval",
            "min_remaining_percent",
            "fail_closed_on_unknown_quota",
        )

    def clean_min_remaining_percent(self) -> float:
        value: float = self.cleaned_data["min_remaining_percent"]
        if not 0 <= value <= 100:
            raise forms.ValidationError("Between 0 and 100.")
        return value


class PoolSettingsForm(PoolForm):
    class Meta(PoolForm.Meta):
        fields = tuple(f for f in PoolForm.Meta.fields if f != "slug")


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True, help_text="Their login name.")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True, help_text="What the token is for.")
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=[
            ("7", "in 7 days"),
            ("30", "in 30 days"),
            ("90", "in 90 days"),
            ("366", "in a year"),
            ("", "never (revoke it by hand)"),
        ],
        initial="90",
        required=False,
        coerce=int,
        empty_value=None,
        help_text="An expired token stops working; make a new one.",
    )
