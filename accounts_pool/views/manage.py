"""Running a team from the browser: an administrator starts a team (as its lead), a lead creates
pools, edits a pool's policy and manages the members, without the Django admin."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from ..forms import MemberForm, PoolForm, PoolSettingsForm, TeamForm
from ..models import Membership
from ..services import teams
from ..services.errors import ServiceError
from .access import pool_or_404, signed_in_user, team_or_404

ADMINS_ONLY = "Only an administrator (staff or superuser) starts a team."


@login_required
@require_http_methods(["GET", "POST"])
def team_create(request: HttpRequest) -> HttpResponse:
    user = signed_in_user(request)
    if not (user.is_staff or user.is_superuser):
        raise PermissionDenied(ADMINS_ONLY)
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = teams.team_create_led_by(
                name=form.cleaned_data["name"], slug=form.cleaned_data["slug"], lead=user
            )
        except ServiceError as exc:
            form.add_error("slug", exc.message)
        else:
            messages.success(request, f"Team “{team.name}” created; you are its lead.")
            return redirect("team", team=team.slug)
    status = 400 if form.errors else 200
    return render(request, "pages/team_create.html", {"form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def pool_create(request: HttpRequest, team: str) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    form = PoolForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            pool = teams.pool_create(team=found, fields=dict(form.cleaned_data))
        except ServiceError as exc:
            form.add_error("slug", exc.message)
        else:
            messages.success(request, f"Pool “{pool.name}” created: add its first account.")
            return redirect("add_account", pool=pool.slug)
    status = 400 if form.errors else 200
    context = {"team": found, "form": form}
    return render(request, "pages/pool_create.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def pool_settings(request: HttpRequest, pool: str) -> HttpResponse:
    found, _ = pool_or_404(request, pool, lead=True)
    form = PoolSettingsForm(request.POST or None, instance=found)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Pool settings saved.")
        return redirect("pool", pool=found.slug)
    status = 400 if form.errors else 200
    context = {"team": found.team, "pool": found, "form": form}
    return render(request, "pages/pool_settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, team: str) -> HttpResponse:
    found, role = team_or_404(request, team)
    is_lead = role == Membership.Role.LEAD
    form = MemberForm(request.POST or None)
    if request.method == "POST":
        if not is_lead:
            raise PermissionDenied("Only the team's leads may do this.")
        if form.is_valid():
            try:
                membership = teams.membership_set(
                    team=found,
                    username=form.cleaned_data["username"],
                    role=form.cleaned_data["role"],
                    by=signed_in_user(request),
                )
            except ServiceError as exc:
                form.add_error("username", exc.message)
            else:
                messages.success(
                    request, f"{membership.user.get_username()} is now a {membership.role}."
                )
                return redirect("members", team=found.slug)
    rows = Membership.objects.filter(team=found).select_related("user").order_by("user__username")
    context = {"team": found, "form": form, "memberships": rows, "is_lead": is_lead}
    status = 400 if form.errors else 200
    return render(request, "pages/members.html", context, status=status)


@login_required
@require_POST
def member_change(request: HttpRequest, team: str, user_id: int) -> HttpResponse:
    found, _ = team_or_404(request, team, lead=True)
    try:
        if request.POST.get("remove"):
            removed = teams.membership_remove(team=found, user_id=user_id)
            messages.success(request, f"{removed.user.get_username()} removed from the team.")
        else:
            role = request.POST.get("role", "")
            if role not in Membership.Role.values:
                messages.error(request, "Choose lead or member.")
            else:
                changed = teams.membership_set_role(team=found, user_id=user_id, role=role)
                messages.success(request, f"{changed.user.get_username()} is now a {role}.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect("members", team=found.slug)
