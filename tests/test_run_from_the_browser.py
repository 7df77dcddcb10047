"""Running a team from the pages without the Django admin: who may start a team, create pools,
manage members; invite links listed and revoked; refusals that say why without a traceback."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from accounts_pool.models import Membership, Pool, PoolInvite, Team

from .conftest import make_account


@pytest.fixture
def lead(client, alice):
    client.force_login(alice)
    return client


def test_a_staff_member_starts_a_team_and_leads_it(client, db):
    staff = User.objects.create_user("sam", is_staff=True)
    client.force_login(staff)
    response = client.post(reverse("team_create"), {"name": "Ops", "slug": "ops"})
    assert response.status_code == 302
    assert Membership.objects.get(team__slug="ops", user=staff).role == "lead"


def test_someone_who_is_not_staff_cannot_start_a_team_and_is_told_why(client, db, caplog):
    client.force_login(User.objects.create_user("pat"))
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.post(reverse("team_create"), {"name": "Ops", "slug": "ops"})
    assert response.status_code == 403
    assert "Only an administrator" in response.content.decode()
    assert 'class="error-message"' in response.content.decode()
    assert not Team.objects.filter(slug="ops").exists()
    assert all(record.exc_info is None for record in caplog.records)  # no traceback logged


def test_a_members_refusal_carries_the_leads_only_message(client, bob, pool):
    client.force_login(bob)
    response = client.get(reverse("consumer_keys", args=["claude"]))
    assert response.status_code == 403
    assert "lead" in response.content.decode()


def test_a_taken_team_slug_is_a_form_error_that_changes_nothing(client, team):
    client.force_login(User.objects.create_superuser("root"))
    response = client.post(reverse("team_create"), {"name": "Again", "slug": team.slug})
    assert response.status_code == 400
    assert 'id="id_slug-error"' in response.content.decode()
    assert Team.objects.count() == 1


def test_a_lead_creates_a_pool_with_its_policy(lead, team):
    data = {
        "name": "Night",
        "slug": "night",
        "routing": "priority",
        "refresh_lead": "02:00:00",
        "quota_interval": "00:10:00",
        "policy_recheck_interval": "00:30:00",
        "min_remaining_percent": "5",
    }
    response = lead.post(reverse("pool_create", args=[team.slug]), data)
    assert response.status_code == 302
    pool = Pool.objects.get(slug="night")
    assert (pool.team, pool.min_remaining_percent, pool.fail_closed_on_unknown_quota) == (
        team,
        5.0,
        False,  # an unchecked box
    )


def test_a_bad_policy_value_is_refused_next_to_its_field(lead, pool):
    url = reverse("pool_settings", args=["claude"])
    response = lead.post(
        url, {"name": "Claude", "routing": "priority", "min_remaining_percent": "150"}
    )
    assert response.status_code == 400
    pool.refresh_from_db()
    assert pool.min_remaining_percent == 0.0


def test_a_lead_adds_a_member_changes_the_role_and_removes_them(lead, team, alice):
    newcomer = User.objects.create_user("nia")
    lead.post(reverse("members", args=[team.slug]), {"username": "nia", "role": "member"})
    assert Membership.objects.get(user=newcomer).role == "member"
    lead.post(reverse("member_change", args=[team.slug, newcomer.pk]), {"role": "lead"})
    assert Membership.objects.get(user=newcomer).role == "lead"
    lead.post(reverse("member_change", args=[team.slug, newcomer.pk]), {"remove": "1"})
    assert not Membership.objects.filter(user=newcomer).exists()


def test_the_last_lead_cannot_step_down(lead, team, alice):
    response = lead.post(
        reverse("member_change", args=[team.slug, alice.pk]), {"role": "member"}, follow=True
    )
    assert "The last lead stays" in response.content.decode()
    assert Membership.objects.get(user=alice).role == "lead"


def test_an_invite_link_is_shown_once_listed_then_revoked(lead, pool):
    created = lead.post(reverse("invite_create", args=["claude"]))
    assert created.status_code == 302
    shown = lead.get(reverse("add_account", args=["claude"])).content.decode()
    assert 'id="invite-link"' in shown
    invite = PoolInvite.objects.get()
    assert f'data-invite="{invite.pk}"' in shown
    again = lead.get(reverse("add_account", args=["claude"])).content.decode()
    assert 'id="invite-link"' not in again  # shown once
    assert PoolInvite.objects.count() == 1  # the reload created none
    lead.post(reverse("invite_revoke", args=["claude", invite.pk]))
    after = lead.get(reverse("add_account", args=["claude"])).content.decode()
    assert f'data-invite="{invite.pk}"' not in after
    invite.refresh_from_db()
    assert invite.used_at is None
    assert invite.expires_at <= timezone.now()  # ended now, kept in the records


def test_a_cooldown_is_cleared_by_its_own_name(lead, pool):
    account = make_account(pool, cooldown_until=timezone.now() + timedelta(minutes=9))
    response = lead.post(reverse("account_action", args=[account.pk, "clear-backoff"]), follow=True)
    page = response.content.decode()
    assert "Cleared the cooldown" in page
    assert "Backoff cleared" not in page


def test_the_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("favicon.svg")


def test_the_api_docs_fit_a_phone(client, alice):
    client.force_login(alice)
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in (
        response.content.decode()
    )


def test_a_new_key_waits_for_its_one_showing_encrypted_in_the_session(lead, pool):
    from django.contrib.sessions.models import Session

    from accounts_pool.models import ConsumerKey

    lead.post(reverse("consumer_keys", args=["claude"]), {"name": "ci"})
    prefix = ConsumerKey.objects.get().prefix
    stored = "".join(str(s.get_decoded()) for s in Session.objects.all())
    assert "shown_once" in stored
    assert prefix not in stored  # not even the start of the key in clear
    shown = lead.get(reverse("consumer_keys", args=["claude"])).content.decode()
    assert f'value="{prefix}' in shown


def test_a_member_reads_the_members_but_cannot_change_them(client, bob, team):
    client.force_login(bob)
    assert client.get(reverse("members", args=[team.slug])).status_code == 200
    response = client.post(
        reverse("members", args=[team.slug]), {"username": "bob", "role": "lead"}
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=bob).role == "member"


def test_a_missing_page_is_styled_and_says_what_is_missing(lead, pool):
    response = lead.get("/pools/no-such-pool/")
    page = response.content.decode()
    assert response.status_code == 404
    assert 'class="error-message"' in page
    assert "not found" in page.lower()
    assert "app.css" in page


def test_the_server_error_page_renders_without_a_request_context():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")
    assert "Something broke on our side" in page
    assert "app.css" in page
