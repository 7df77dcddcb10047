"""A team's notification channels: create, change, delete, with their targets checked."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .. import notifyrules
from ..models import Channel, Team
from ..providers import notify as outside
from .errors import Invalid

SECRET_PREFIX = "whsec_"
MAX_ADDRESSES = 10


def channel_target_clean(channel_type: str, target: str) -> tuple[str, str]:
    """The target as stored and as shown; Invalid (with the `target` field named) when it may
    not be used: a URL that is not http(s), does not resolve, or resolves inside the network
    (unless ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS); an email list with a bad address."""
    target = target.strip()
    if channel_type == Channel.Type.EMAIL:
        addresses = notifyrules.split_addresses(target)
        if not addresses or len(addresses) > MAX_ADDRESSES:
            raise _bad_target(f"Give 1 to {MAX_ADDRESSES} email addresses, comma-separated.")
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise _bad_target(f"{address!r} is not an email address.") from None
        return ", ".join(addresses), notifyrules.mask_addresses(target)
    if len(target) > 2000:
        raise _bad_target("The URL is too long.")
    problem = notifyrules.url_problem(target) or notifyrules.target_problem(
        target,
        outside.resolve(target),
        allow_private=settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS,
    )
    if problem:
        raise _bad_target(problem)
    return target, notifyrules.mask_url(target)


def _bad_target(message: str) -> Invalid:
    return Invalid(message, code="invalid_target", details={"field": "target"})


def _kinds(kinds: Iterable[str]) -> list[str]:
    known = {k.value for k in notifyrules.Kind}
    unknown = sorted(set(kinds) - known)
    if unknown:
        raise Invalid(
            f"Unknown kinds: {', '.join(unknown)} (known: {', '.join(sorted(known))}).",
            code="invalid_kinds",
            details={"field": "kinds"},
        )
    return [k.value for k in notifyrules.Kind if k.value in set(kinds)]


def _digest_fits(channel_type: str, daily_digest: bool) -> None:
    if daily_digest and channel_type != Channel.Type.EMAIL:
        raise Invalid(
            "The daily digest goes by email only.",
            code="invalid_digest",
            details={"field": "daily_digest"},
        )


def channel_create(
    *,
    team: Team,
    name: str,
    channel_type: str,
    target: str,
    kinds: Iterable[str],
    created_by: User | None,
    daily_digest: bool = False,
) -> tuple[Channel, str]:
    """A new channel. For a webhook, the signing secret is returned this once ('' otherwise)."""
    if channel_type not in Channel.Type.values:
        raise Invalid(f"Unknown channel type {channel_type!r}.", details={"field": "type"})
    _digest_fits(channel_type, daily_digest)
    stored, masked = channel_target_clean(channel_type, target)
    secret = (
        SECRET_PREFIX + secrets.token_urlsafe(32) if channel_type == Channel.Type.WEBHOOK else ""
    )
    channel = Channel.objects.create(
        team=team,
        name=name.strip()[:100] or channel_type,
        type=channel_type,
        target=stored,
        target_masked=masked,
        signing_secret=secret,
        kinds=_kinds(kinds),
        daily_digest=daily_digest,
        created_by=created_by,
    )
    return channel, secret


def channel_update(
    *,
    channel: Channel,
    name: str | None = None,
    target: str | None = None,
    kinds: Iterable[str] | None = None,
    enabled: bool | None = None,
    daily_digest: bool | None = None,
) -> Channel:
    """Change what is given; everything is checked before anything is written."""
    values: dict[str, object] = {}
    if daily_digest is not None:
        _digest_fits(channel.type, daily_digest)
        values["daily_digest"] = daily_digest
    if target is not None:
        values["target"], values["target_masked"] = channel_target_clean(channel.type, target)
    if kinds is not None:
        values["kinds"] = _kinds(kinds)
    if name is not None:
        values["name"] = name.strip()[:100] or channel.name
    if enabled is not None:
        values["enabled"] = enabled
    for field, value in values.items():
        setattr(channel, field, value)
    if values:
        channel.save(update_fields=list(values))
    return channel


def channel_delete(*, channel: Channel) -> None:
    channel.delete()
