"""A team's notification channels (leads only): list, create, change, delete, the delivery log,
and a test message."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from ..models import Channel, DeliveryAttempt
from ..services import channels as channel_services
from ..services.notifications import channel_send_test
from . import access
from .schemas import (
    ChannelIn,
    ChannelOut,
    ChannelPatch,
    ChannelTestOut,
    DeliveryLogFilters,
    DeliveryLogPage,
    ErrorOut,
)

router = Router(tags=["notifications"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


def channel_out(channel: Channel, signing_secret: str | None = None) -> dict[str, Any]:
    """A channel as the API shows it: the target masked, the secret only when just made."""
    return {
        "id": channel.pk,
        "name": channel.name,
        "type": channel.type,
        "target": channel.target_masked,
        "kinds": channel.kinds,
        "enabled": channel.enabled,
        "daily_digest": channel.daily_digest,
        "created_at": channel.created_at,
        "signing_secret": signing_secret or None,
    }


def _channel(request: HttpRequest, team: str, channel_id: int) -> Channel:
    found = access.team_for(access.principal(request), team, lead=True)
    # The target stays encrypted unless a send needs it.
    channel = (
        Channel.objects.filter(team=found, pk=channel_id).defer("target", "signing_secret").first()
    )
    if channel is None:
        raise access.NotFound("Channel")
    return channel


@router.get("/teams/{team}/channels", response={200: list[ChannelOut], **ERRORS})
def list_channels(request: HttpRequest, team: str) -> list[dict[str, Any]]:
    """The team's channels, targets masked. Leads only."""
    found = access.team_for(access.principal(request), team, lead=True)
    channels = Channel.objects.filter(team=found).defer("target", "signing_secret")
    return [channel_out(c) for c in channels]


@router.post("/teams/{team}/channels", response={201: ChannelOut, **ERRORS})
def create_channel(request: HttpRequest, team: str, payload: ChannelIn) -> Status[dict[str, Any]]:
    """A webhook, Slack or email channel. A webhook's `signing_secret` is in this answer only.
    A URL resolving to a loopback, private or link-local address is refused (422)."""
    principal = access.principal(request)
    found = access.team_for(principal, team, lead=True)
    channel, secret = channel_services.channel_create(
        team=found,
        name=payload.name,
        channel_type=payload.type,
        target=payload.target,
        kinds=payload.kinds,
        daily_digest=payload.daily_digest,
        created_by=principal.user,
    )
    return Status(201, channel_out(channel, secret))


@router.patch("/teams/{team}/channels/{channel_id}", response={200: ChannelOut, **ERRORS})
def patch_channel(
    request: HttpRequest, team: str, channel_id: int, payload: ChannelPatch
) -> dict[str, Any]:
    """Change the name, target, kinds or enabled. Leads only."""
    channel = _channel(request, team, channel_id)
    channel_services.channel_update(
        channel=channel,
        name=payload.name,
        target=payload.target,
        kinds=payload.kinds,
        enabled=payload.enabled,
        daily_digest=payload.daily_digest,
    )
    return channel_out(channel)


@router.delete("/teams/{team}/channels/{channel_id}", response={204: None, **ERRORS})
def delete_channel(request: HttpRequest, team: str, channel_id: int) -> Status[None]:
    """Delete the channel with its delivery log. Leads only."""
    channel_services.channel_delete(channel=_channel(request, team, channel_id))
    return Status(204, None)


def log_row(row: DeliveryAttempt) -> dict[str, Any]:
    return {
        "at": row.at,
        "delivery_id": row.delivery_id,
        "kind": row.delivery.kind,
        "state": row.delivery.direction or row.delivery.kind,
        "attempt": row.attempt,
        "status_code": row.status_code,
        "ok": row.ok,
        "error": row.error,
    }


@router.get(
    "/teams/{team}/channels/{channel_id}/deliveries", response={200: DeliveryLogPage, **ERRORS}
)
def list_deliveries(
    request: HttpRequest, team: str, channel_id: int, filters: Query[DeliveryLogFilters]
) -> dict[str, Any]:
    """The delivery log, newest first: one row per attempt (time, kind, attempt, answer code,
    error)."""
    channel = _channel(request, team, channel_id)
    log = DeliveryAttempt.objects.filter(channel=channel)
    start = (filters.page - 1) * filters.page_size
    rows = log.select_related("delivery").defer("delivery__payload")[
        start : start + filters.page_size
    ]
    return {
        "items": [log_row(row) for row in rows],
        "count": log.count(),
        "page": filters.page,
        "page_size": filters.page_size,
    }


@router.post("/teams/{team}/channels/{channel_id}/test", response={200: ChannelTestOut, **ERRORS})
def test_channel(request: HttpRequest, team: str, channel_id: int) -> dict[str, Any]:
    """Send a test message now, once; the answer says how it went (and the log keeps it)."""
    channel = Channel.objects.get(pk=_channel(request, team, channel_id).pk)
    result = channel_send_test(channel=channel)
    attempt = result.attempt
    return {
        "outcome": result.outcome.value,
        "status_code": attempt.status_code if attempt else None,
        "error": attempt.error if attempt else "",
    }
