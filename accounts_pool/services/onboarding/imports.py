"""Imports: a Claude Code credentials file or an anthropic-auth accounts file, all or nothing.
Entries with a live access token are checked with the provider first (usage and profile, which
rotate nothing); entries with only a refresh token are stored as given for the cycle to check."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from ... import state
from ...crypto import fingerprint
from ...models import Account, Pool
from ...providers import anthropic
from ..errors import Invalid
from ..quota import quota_record_failure, quota_record_usage
from .common import accounts_holding_refresh_tokens, create_oauth


@dataclass(frozen=True)
class ImportEntry:
    label: str
    refresh_token: str
    access_token: str
    expires_at: datetime | None
    email: str


def _epoch(value: Any) -> datetime | None:
    """Milliseconds (Claude Code, anthropic-auth) or seconds since the epoch, or ISO 8601."""
    if isinstance(value, bool) or value in (None, ""):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("expiresAt is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValueError("expiresAt is neither a number nor an ISO 8601 time") from None
        if not 2000 <= parsed.year <= 9000:
            raise ValueError("expiresAt is out of range")
        return parsed
    raise ValueError("expiresAt is neither a number nor an ISO 8601 time")


def _text(entry: dict[str, Any], *names: str) -> str:
    for name in names:
        value = entry.get(name)
        if isinstance(value, str) and value.strip():
            if "\x00" in value:
                raise ValueError(f"{name} contains a NUL character")
            return value.strip()
    return ""


def _entry(raw: Any, default_label: str) -> ImportEntry:
    if not isinstance(raw, dict):
        raise ValueError("an entry must be an object")
    refresh = _text(raw, "refreshToken", "refresh_token", "refresh")
    if not refresh:
        raise ValueError("refreshToken is missing")
    access = _text(raw, "accessToken", "access_token", "access")
    expires = _epoch(raw.get("expiresAt", raw.get("expires_at", raw.get("expires"))))
    email = _text(raw, "email", "emailAddress")
    label = _text(raw, "label", "name") or email or default_label
    return ImportEntry(label[:100], refresh, access, expires if access else None, email[:254])


def parse_import(document: Any, *, label: str = "") -> list[ImportEntry]:
    """Read a Claude Code credentials file or an anthropic-auth accounts file.

    Raises Invalid with a per-entry error list when anything is wrong."""
    if not isinstance(document, dict):
        raise Invalid("The file must be a JSON object.", code="import_invalid")
    if "claudeAiOauth" in document:
        raws: list[Any] = [document["claudeAiOauth"]]
        default = label or "Claude Code"
    elif isinstance(document.get("accounts"), list):
        if document.get("version") != 1:
            raise Invalid("Only version 1 accounts files are understood.", code="import_invalid")
        raws = document["accounts"]
        default = label or "imported"
    else:
        raise Invalid(
            'Not a Claude Code credentials file ({"claudeAiOauth": …}) or an accounts file '
            '({"version": 1, "accounts": […]}).',
            code="import_invalid",
        )
    entries: list[ImportEntry] = []
    errors: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        try:
            entries.append(_entry(raw, f"{default} {index + 1}" if len(raws) > 1 else default))
        except ValueError as exc:
            errors.append({"index": index, "error": str(exc)})
    if not raws:
        errors.append({"index": None, "error": "the file holds no accounts"})
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        mark = fingerprint(entry.refresh_token)
        if mark in seen:
            errors.append({"index": index, "error": f"same refresh token as entry {seen[mark]}"})
        seen[mark] = index
    if errors:
        raise Invalid(
            f"{len(errors)} entr{'y' if len(errors) == 1 else 'ies'} cannot be imported; "
            "nothing was saved.",
            code="import_invalid",
            details=errors,
        )
    return entries


def accounts_import(
    *, pool: Pool, document: Any, label: str = "", actor: str, now: datetime | None = None
) -> list[Account]:
    """Import every account of a file, or none. Tokens are stored as given (no provider call:
    refreshing here would rotate tokens that a refused import could then not keep); the cycle
    checks them within a minute."""
    now = now or timezone.now()
    entries = parse_import(document, label=label)
    held = accounts_holding_refresh_tokens(pool.team_id, [e.refresh_token for e in entries])
    errors = [
        {
            "index": index,
            "error": f"this refresh token is already in the team as “{holder.label}”",
            "account_id": holder.pk,
        }
        for index, entry in enumerate(entries)
        if (holder := held.get(entry.refresh_token)) is not None
    ]
    if errors:
        raise Invalid(
            "Some accounts are already in the team; nothing was saved.",
            code="import_invalid",
            details=errors,
        )
    checks = _check_access_tokens(entries, now)
    refused_entries = [
        {"index": index, "error": check.refused}
        for index, check in enumerate(checks)
        if check is not None and check.refused
    ]
    if refused_entries:
        raise Invalid(
            "The provider refused some entries; nothing was saved.",
            code="import_invalid",
            details=refused_entries,
        )
    with transaction.atomic():
        created = [
            create_oauth(
                pool=pool,
                label=entry.label,
                refresh_token=entry.refresh_token,
                access_token=entry.access_token,
                expires_at=entry.expires_at,
                identity={
                    **({"email": entry.email} if entry.email else {}),
                    **(check.identity if check is not None else {}),
                },
                actor=actor,
                now=now,
                how="import, access token checked" if check is not None else "import",
            )
            for entry, check in zip(entries, checks, strict=True)
        ]
    for account, check in zip(created, checks, strict=True):
        if check is not None and check.usage is not None:
            quota_record_usage(account, check.usage, now, actor)
        elif check is not None and check.failure is not None:
            quota_record_failure(account, check.failure, now, actor)
    return created


@dataclass(frozen=True)
class _Checked:
    """What the provider said of an entry's access token (no refresh: that would rotate it)."""

    refused: str = ""
    identity: dict[str, str] = field(default_factory=dict)
    usage: anthropic.Usage | None = None
    failure: state.QuotaFailure | None = None


def _check_access_tokens(entries: list[ImportEntry], now: datetime) -> list[_Checked | None]:
    """Check each entry that carries a live access token as token onboarding does (usage, then
    profile for the identity), before anything is saved. An entry with only a refresh token is
    not checked (None): checking it would rotate it, and a refused import could not keep the
    new one. A refused access token is listed; a busy provider leaves the check to the cycle."""
    checks: list[_Checked | None] = []
    live = [e for e in entries if e.access_token and e.expires_at and e.expires_at > now]
    if not live:
        return [None] * len(entries)
    with anthropic.client() as provider:
        for entry in entries:
            if entry not in live:
                checks.append(None)
                continue
            usage, failure = None, None
            try:
                usage = provider.usage(entry.access_token)
            except anthropic.UsageEndpointError as exc:
                failure = exc.failure
                if state.onboarding_usage_outcome(failure) == state.OnboardingOutcome.REFUSED:
                    message = failure.message or failure.kind.value
                    checks.append(
                        _Checked(refused=f"the provider refused the access token: {message}")
                    )
                    continue
            identity: dict[str, str] = {}
            # Without a profile the identity stays what the file said; a refresh may fill it.
            with contextlib.suppress(anthropic.ProfileEndpointError):
                identity = provider.profile(entry.access_token).identity()
            checks.append(_Checked(identity=identity, usage=usage, failure=failure))
    return checks
