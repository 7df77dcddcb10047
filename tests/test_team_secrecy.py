"""A lead learns nothing of other teams from an error: not their pools' slugs, not their members'
usernames; a lead still adds people of their own teams and people in no team yet."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from accounts_pool.models import Membership, Pool, Team
from accounts_pool.services.keys import api_token_create

from .api import Api, error_code
from .conftest import make_account


@pytest.fixture
def lead(alice, pool):
    return Api(api_token_create(user=alice, name="cli")[1])


@pytest.fixture
def otherside(db):
    """Team otherside: olga leads it, its pool is their-pool."""
    other = Team.objects.create(name="Otherside", slug="otherside")
    olga = User.objects.create_user("olga")
    Membership.objects.create(team=other, user=olga, role=Membership.Role.LEAD)
    Pool.objects.create(team=other, name="Their pool", slug="their-pool")
    return other


def _answer(response):
    return response.status_code, error_code(response), response.json()["error"]["message"]


def test_a_slug_another_team_holds_answers_as_any_unavailable_slug(lead, otherside):
    taken = lead.post("/teams/acme/pools", {"name": "Mine", "slug": "their-pool"})

    assert taken.status_code == 422
    assert error_code(taken) == "validation_error"
    assert "their-pool" not in taken.content.decode()
    assert "exists" not in taken.content.decode()


def test_a_slug_the_leads_own_team_holds_is_a_conflict_that_says_so(lead):
    taken = lead.post("/teams/acme/pools", {"name": "Again", "slug": "claude"})

    assert taken.status_code == 409
    assert "Your team already has a pool" in taken.json()["error"]["message"]


def test_a_member_of_another_team_answers_as_an_unknown_username(lead, otherside):
    olga = lead.post("/teams/acme/members", {"username": "olga", "role": "member"})
    nobody = lead.post("/teams/acme/members", {"username": "no-such-user", "role": "member"})

    assert _answer(olga)[:2] == _answer(nobody)[:2] == (422, "unknown_user")
    assert _answer(olga)[2].replace("olga", "X") == _answer(nobody)[2].replace("no-such-user", "X")
    assert not Membership.objects.filter(user__username="olga", team__slug="acme").exists()


def test_a_lead_adds_people_in_no_team_yet_and_people_of_their_own_teams(lead, alice, otherside):
    User.objects.create_user("carol")
    colleague = User.objects.create_user("dave")
    sideline = Team.objects.create(name="Sideline", slug="sideline")
    Membership.objects.create(team=sideline, user=alice, role=Membership.Role.MEMBER)
    Membership.objects.create(team=sideline, user=colleague, role=Membership.Role.MEMBER)

    for username in ("carol", "dave"):
        added = lead.post("/teams/acme/members", {"username": username, "role": "member"})
        assert added.status_code == 201, added.content


def test_a_superuser_adds_anyone(otherside):
    root = Api(api_token_create(user=User.objects.create_superuser("root"), name="cli")[1])
    acme = Team.objects.create(name="Acme", slug="acme")

    added = root.post("/teams/acme/members", {"username": "olga", "role": "lead"})

    assert added.status_code == 201
    assert Membership.objects.filter(team=acme, user__username="olga").exists()


def test_another_teams_account_answers_as_a_missing_one(lead, otherside):
    theirs = make_account(Pool.objects.get(slug="their-pool"), label="theirs")
    missing = theirs.pk + 1000
    for path in ("/accounts/{}", "/accounts/{}/events"):
        assert _answer(lead.get(path.format(theirs.pk))) == _answer(lead.get(path.format(missing)))
    start = [
        lead.post("/pools/claude/oauth/start", {"account_id": account_id})
        for account_id in (theirs.pk, missing)
    ]
    assert _answer(start[0]) == _answer(start[1]) == (404, "not_found", "Account not found.")
    assert "theirs" not in "".join(lead.seen)
