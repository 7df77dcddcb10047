"""The notification pages (leads): a team's channels, one channel with its delivery log and a
test button, and each pool's minimum usable accounts."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from ..models import Channel, DeliveryAttempt, Pool, Team
from ..notifyforms import ChannelEditForm, ChannelForm, MinimumUsableForm
from ..services import channels as channel_services
from ..services import teams as team_services
from ..services.errors import Invalid
from ..services.notifications import DeliveryOutcome, channel_send_test
from .access import signed_in_user, team_or_404

LOG_PER_PAGE = 50


def _refused(form: forms.Form, refused: Invalid) -> None:
    field = (refused.details or {}).get("field") if isinstance(refused.details, dict) else None
    form.add_error(field if field in form.fields else None, refused.message)


def _channels_page(
    request: HttpRequest, team: Team, form: ChannelForm, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "pages/channels.html",
        {
            "team": team,
            "form": form,
            "channels": Channel.objects.filter(team=team).defer("target", "signing_secret"),
            "pools": Pool.objects.filter(team=team).order_by("name"),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def channels(request: HttpRequest, team: str) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    form = ChannelForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                channel, secret = channel_services.channel_create(
                    team=found,
                    name=form.cleaned_data["name"],
                    channel_type=form.cleaned_data["type"],
                    target=form.cleaned_data["target"],
                    kinds=form.cleaned_data["kinds"],
                    daily_digest=form.cleaned_data["daily_digest"],
                    created_by=signed_in_user(request),
                )
            except Invalid as refused:
                _refused(form, refused)
            else:
                messages.success(request, f"Channel “{channel.name}” created.")
                return _channel_page(request, found, channel, shown_once=secret)
        return _channels_page(request, found, form, status=422)
    return _channels_page(request, found, form)


def _channel_of(team: Team, channel_id: int) -> Channel:
    channel = Channel.objects.filter(team=team, pk=channel_id).defer("target").first()
    if channel is None:
        raise Http404("Not found.")
    return channel


def _channel_page(
    request: HttpRequest,
    team: Team,
    channel: Channel,
    *,
    form: ChannelEditForm | None = None,
    shown_once: str = "",
    status: int = 200,
) -> HttpResponse:
    log = (
        DeliveryAttempt.objects.filter(channel=channel)
        .select_related("delivery")
        .defer("delivery__payload")
    )
    page = Paginator(log, LOG_PER_PAGE).get_page(request.GET.get("page"))
    form = form or ChannelEditForm(
        initial={
            "name": channel.name,
            "kinds": channel.kinds,
            "enabled": channel.enabled,
            "daily_digest": channel.daily_digest,
        }
    )
    return render(
        request,
        "pages/channel.html",
        {"team": team, "channel": channel, "form": form, "log": page, "shown_once": shown_once},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def channel_detail(request: HttpRequest, team: str, channel_id: int) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    channel = _channel_of(found, channel_id)
    if request.method == "GET":
        return _channel_page(request, found, channel)
    form = ChannelEditForm(request.POST)
    if form.is_valid():
        try:
            channel_services.channel_update(
                channel=channel,
                name=form.cleaned_data["name"],
                target=form.cleaned_data["target"] or None,
                kinds=form.cleaned_data["kinds"],
                enabled=form.cleaned_data["enabled"],
                daily_digest=form.cleaned_data["daily_digest"],
            )
        except Invalid as refused:
            _refused(form, refused)
        else:
            messages.success(request, "Channel saved.")
            return redirect("channel", team=found.slug, channel_id=channel.pk)
    return _channel_page(request, found, channel, form=form, status=422)


@login_required
@require_POST
def channel_test(request: HttpRequest, team: str, channel_id: int) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    channel = Channel.objects.filter(team=found, pk=_channel_of(found, channel_id).pk).get()
    result = channel_send_test(channel=channel)
    attempt = result.attempt
    if result.outcome == DeliveryOutcome.DELIVERED:
        code = f" (answer {attempt.status_code})" if attempt and attempt.status_code else ""
        messages.success(request, f"Test message delivered{code}.")
    else:
        messages.error(request, f"Test message failed: {attempt.error if attempt else 'not sent'}.")
    return redirect("channel", team=found.slug, channel_id=channel.pk)


@login_required
@require_POST
def channel_delete(request: HttpRequest, team: str, channel_id: int) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    channel = _channel_of(found, channel_id)
    channel_services.channel_delete(channel=channel)
    messages.success(request, f"Channel “{channel.name}” deleted with its log.")
    return redirect("channels", team=found.slug)


@login_required
@require_POST
def pool_minimum(request: HttpRequest, team: str, pool: str) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    target = Pool.objects.filter(team=found, slug=pool).first()
    if target is None:
        raise Http404("Not found.")
    form = MinimumUsableForm(request.POST)
    if form.is_valid():
        team_services.pool_update(
            pool=target, fields={"minimum_usable": form.cleaned_data["minimum_usable"]}
        )
        messages.success(request, f"Pool {target.name}: minimum usable saved.")
    else:
        messages.error(request, f"Pool {target.name}: give a whole number from 0.")
    return redirect("channels", team=found.slug)
