"""Team isolation as one set of rules: what each caller gets, and how the API and the pages
say no. (Every endpoint against every caller is tests/test_api_permissions.py.)"""

from __future__ import annotations

from uuid import uuid4

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.test import RequestFactory
from ninja.errors import HttpError

from accounts_pool import access
from accounts_pool.access import Principal
from accounts_pool.api import access as api_access
from accounts_pool.models import Checkout, Membership, Pool, Team
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.views import access as page_access

from .conftest import NOW


@pytest.fixture
def charlie(db: None) -> User:
    """Leads another team: must see nothing of acme."""
    other = Team.objects.create(name="Otherside", slug="otherside")
    user = User.objects.create_user("charlie")
    Membership.objects.create(team=other, user=user, role=Membership.Role.LEAD)
    return user


@pytest.fixture
def key(pool: Pool, alice: User):
    return consumer_key_create(pool=pool, name="Build runner", created_by=alice)[0]


def test_a_member_reads_the_pool_with_their_role(pool, bob):
    assert access.pool_for(Principal(user=bob), "claude") == (pool, Membership.Role.MEMBER)


def test_a_member_may_not_act(pool, bob):
    with pytest.raises(access.LeadsOnly):
        access.pool_for(Principal(user=bob), "claude", lead=True)


def test_a_lead_acts(pool, alice):
    assert access.pool_for(Principal(user=alice), "claude", lead=True)[0] == pool


def test_a_superuser_acts_as_a_lead_without_a_membership(pool):
    root = User.objects.create_superuser("root")

    assert access.pool_for(Principal(user=root), "claude", lead=True)[1] == Membership.Role.LEAD


def test_another_teams_pool_is_as_not_found_as_a_missing_one(pool, charlie):
    with pytest.raises(access.NotFound) as there:
        access.pool_for(Principal(user=charlie), "claude")
    with pytest.raises(access.NotFound) as missing:
        access.pool_for(Principal(user=charlie), "no-such-pool")

    assert there.value.message == missing.value.message == "Pool not found."


def test_a_key_reads_its_own_pool_only_where_allowed(pool, key):
    assert access.pool_for(Principal(key=key), "claude", key_ok=True) == (pool, None)
    with pytest.raises(access.Forbidden):
        access.pool_for(Principal(key=key), "claude")


def test_a_key_finds_no_other_pool(pool, key, team):
    Pool.objects.create(team=team, name="Second", slug="second")

    with pytest.raises(access.NotFound):
        access.pool_for(Principal(key=key), "second", key_ok=True)


def test_a_key_may_not_reach_teams_or_accounts(team, key):
    with pytest.raises(access.Forbidden, match="Consumer keys may only"):
        access.team_for(Principal(key=key), "acme")
    with pytest.raises(access.Forbidden, match="Consumer keys may only"):
        access.account_for(Principal(key=key), 1)


def test_a_key_finds_only_its_own_checkouts(pool, key, alice, account):
    other, _ = consumer_key_create(pool=pool, name="Laptop", created_by=alice)
    made = Checkout.objects.create(id=uuid4(), account=account, consumer_key=key, at=NOW)

    assert access.checkout_for(key, made.pk) == made
    with pytest.raises(access.NotFound):
        access.checkout_for(other, made.pk)


def test_the_api_says_no_as_an_http_error_naming_the_kind(pool, bob):
    with pytest.raises(HttpError) as refused:
        api_access.pool_for(Principal(user=bob), "claude", lead=True)

    assert refused.value.status_code == 403
    assert str(refused.value) == "Only the team's leads may do this (Pool)."


def test_a_page_says_no_without_naming_the_kind(pool, bob, charlie):
    def page(user):
        request = RequestFactory().get("/")
        request.user = user
        return request

    with pytest.raises(PermissionDenied, match=r"^Only the team's leads may do this\.$"):
        page_access.pool_or_404(page(bob), "claude", lead=True)
    with pytest.raises(Http404, match=r"^Not found\.$"):
        page_access.pool_or_404(page(charlie), "claude")


def test_an_endpoint_without_auth_has_no_principal():
    request = RequestFactory().get("/")

    with pytest.raises(RuntimeError, match="not a Principal"):
        api_access.principal(request)


def test_a_page_without_a_signed_in_user_has_no_principal():
    request = RequestFactory().get("/")
    request.user = AnonymousUser()

    with pytest.raises(RuntimeError, match="login_required"):
        page_access.principal(request)
