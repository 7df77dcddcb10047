"""Channels through the API and the pages: leads only, targets masked and checked (no
loopback, private or link-local address unless allowed), the delivery log and the test button."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts_pool.models import Channel, DeliveryAttempt, Membership, Pool, Team
from accounts_pool.notifyrules import Kind
from accounts_pool.services.channels import channel_create
from accounts_pool.services.keys import api_token_create
from accounts_pool.services.notifications import channel_send_test, deliveries_prune

from . import receivers
from .api import Api, error_code

pytestmark = pytest.mark.django_db
HOOK = {"name": "hook", "type": "webhook", "kinds": ["needs_relogin", "pool_dry"]}


@pytest.fixture
def api(alice) -> Api:
    return Api(api_token_create(user=alice, name="t")[1])


@pytest.fixture
def charlie(db):
    from django.contrib.auth.models import User

    user = User.objects.create_user("charlie", password="charlie-password-1")
    other = Team.objects.create(name="Other", slug="other")
    Membership.objects.create(team=other, user=user, role=Membership.Role.LEAD)
    return user


def test_a_lead_creates_a_webhook_and_sees_its_secret_once(api):
    with receivers.receiver() as hook:
        created = api.post("/teams/acme/channels", {**HOOK, "target": hook.url})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["signing_secret"].startswith("whsec_")
    assert body["target"] == f"http://127.0.0.1:{hook.port}/…"
    listed = api.get("/teams/acme/channels").json()
    assert [c["signing_secret"] for c in listed] == [None]
    assert "secret-path-123" not in "".join(api.seen)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data/"]
)
def test_the_api_refuses_internal_webhook_targets_unless_allowed(api, settings, url):
    settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = False
    refused = api.post("/teams/acme/channels", {**HOOK, "target": url})
    assert refused.status_code == 422
    assert error_code(refused) == "invalid_target"
    message = refused.json()["error"]["message"]
    assert url.split("/")[2].split(":")[0] in message
    assert "private, loopback or link-local" in message
    assert refused.json()["error"]["details"] == {"field": "target"}
    assert not Channel.objects.exists()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data/"]
)
def test_the_form_refuses_internal_webhook_targets_unless_allowed(client, alice, settings, url):
    settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = False
    client.force_login(alice)
    page = client.post(
        reverse("channels", args=["acme"]),
        {"name": "hook", "type": "webhook", "target": url, "kinds": ["needs_relogin"]},
    )
    assert page.status_code == 422
    html = page.content.decode()
    assert 'id="id_target-error"' in html
    assert "private, loopback or link-local" in html
    assert url not in html  # the typed URL is not rendered back
    assert not Channel.objects.exists()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"type": "pager"}, "validation_error"),
        ({"kinds": ["everything"]}, "validation_error"),
        ({"kinds": []}, "validation_error"),
        ({"target": "ftp://example.com/x"}, "invalid_target"),
        ({"type": "email", "target": "not-an-address"}, "invalid_target"),
        ({"surprise": 1}, "validation_error"),
        ({"daily_digest": True}, "invalid_digest"),  # a webhook: the digest is email only
    ],
)
def test_bad_channels_are_refused_and_nothing_is_stored(api, change, code):
    refused = api.post("/teams/acme/channels", {**HOOK, "target": "http://127.0.0.1:9/", **change})
    assert refused.status_code == 422
    assert error_code(refused) == code
    assert not Channel.objects.exists()


def test_members_and_other_teams_cannot_see_channels(team, alice, bob, charlie):
    channel_create(
        team=team, name="h", channel_type="email", target="a@acme.test", kinds=[], created_by=alice
    )
    as_bob = Api(api_token_create(user=bob, name="t")[1])
    as_charlie = Api(api_token_create(user=charlie, name="t")[1])
    assert as_bob.get("/teams/acme/channels").status_code == 403
    assert as_charlie.get("/teams/acme/channels").status_code == 404
    assert as_charlie.delete(f"/teams/acme/channels/{Channel.objects.get().pk}").status_code == 404
    assert as_charlie.get("/teams/other/channels/1/deliveries").status_code == 404
    assert Channel.objects.count() == 1


def test_send_test_reaches_the_receiver_and_fills_the_log(api):
    with receivers.receiver(200) as hook:
        made = api.post("/teams/acme/channels", {**HOOK, "target": hook.url}).json()
        tested = api.post(f"/teams/acme/channels/{made['id']}/test")
    assert tested.json() == {"outcome": "delivered", "status_code": 200, "error": ""}
    assert len(hook.accepted()) == 1
    log = api.get(f"/teams/acme/channels/{made['id']}/deliveries").json()
    assert log["count"] == 1
    assert {k: log["items"][0][k] for k in ("kind", "attempt", "status_code", "ok")} == {
        "kind": "test",
        "attempt": 1,
        "status_code": 200,
        "ok": True,
    }


def test_a_failed_test_says_why_and_is_not_retried(api):
    made = api.post("/teams/acme/channels", {**HOOK, "target": "http://127.0.0.1:9/x"}).json()
    tested = api.post(f"/teams/acme/channels/{made['id']}/test").json()
    assert tested["outcome"] == "gave_up"
    assert "could not connect" in tested["error"]


def test_a_lead_changes_kinds_and_target_and_disables_a_channel(api, settings):
    made = api.post("/teams/acme/channels", {**HOOK, "target": "http://127.0.0.1:9/x"}).json()
    path = f"/teams/acme/channels/{made['id']}"
    changed = api.patch(path, {"kinds": ["pool_low"], "enabled": False}).json()
    assert (changed["kinds"], changed["enabled"]) == (["pool_low"], False)
    settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = False
    refused = api.patch(path, {"target": "http://10.0.0.8/x", "kinds": ["pool_dry"]})
    assert refused.status_code == 422
    assert Channel.objects.get().kinds == ["pool_low"]  # nothing of the refused patch
    assert api.delete(path).status_code == 204
    assert not Channel.objects.exists()


def test_the_pool_minimum_is_set_by_the_api_and_the_page(api, client, alice, pool):
    assert api.patch("/pools/claude", {"minimum_usable": 3}).json()["minimum_usable"] == 3
    client.force_login(alice)
    client.post(reverse("pool_minimum", args=["acme", "claude"]), {"minimum_usable": "2"})
    assert Pool.objects.get().minimum_usable == 2
    client.post(reverse("pool_minimum", args=["acme", "claude"]), {"minimum_usable": "-1"})
    assert Pool.objects.get().minimum_usable == 2
    assert api.patch("/pools/claude", {"minimum_usable": -1}).status_code == 422


def test_the_channel_page_shows_the_mask_the_log_and_never_the_target(client, team, alice):
    with receivers.receiver(503) as hook:
        channel, secret = channel_create(
            team=team,
            name="hook",
            channel_type="webhook",
            target=hook.url,
            kinds=["pool_dry"],
            created_by=alice,
        )
        client.force_login(alice)
        client.post(reverse("channel_test", args=["acme", channel.pk]))
        page = client.get(reverse("channel", args=["acme", channel.pk]))
        listing = client.get(reverse("channels", args=["acme"]))
    html = page.content.decode() + listing.content.decode()
    assert f"http://127.0.0.1:{hook.port}/…" in html
    assert "answered HTTP 503" in html
    assert "secret-path-123" not in html
    assert secret not in html


def test_members_get_no_notification_pages(client, team, bob):
    client.force_login(bob)
    assert client.get(reverse("channels", args=["acme"])).status_code == 403


def _channels_with_log(team, alice, count: int) -> None:
    for n in range(count):
        channel, _ = channel_create(
            team=team,
            name=f"c{n}",
            channel_type="email",
            target=f"c{n}@acme.test",
            kinds=["pool_dry"],
            created_by=alice,
        )
        channel_send_test(channel=channel)


@pytest.mark.parametrize("count", [1, 5])
def test_listing_channels_and_a_log_costs_the_same_queries_for_more_rows(
    api, team, alice, count, django_assert_max_num_queries
):
    _channels_with_log(team, alice, count)
    channel = Channel.objects.first()
    for _ in range(3):
        channel_send_test(channel=channel)
    with django_assert_max_num_queries(6):
        assert len(api.get("/teams/acme/channels").json()) == count
    with django_assert_max_num_queries(7):
        assert api.get(f"/teams/acme/channels/{channel.pk}/deliveries").json()["count"] == 4


def test_the_admin_shows_channels_masked_and_never_their_secret(admin_client, team, alice):
    channel, secret = channel_create(
        team=team,
        name="hook",
        channel_type="webhook",
        target="http://127.0.0.1:9/secret-path-123",
        kinds=["pool_dry"],
        created_by=alice,
    )
    pages = [
        admin_client.get(reverse("admin:accounts_pool_channel_changelist")),
        admin_client.get(reverse("admin:accounts_pool_channel_change", args=[channel.pk])),
    ]
    html = "".join(page.content.decode() for page in pages)
    assert all(page.status_code == 200 for page in pages)
    assert "http://127.0.0.1:9/…" in html
    assert "secret-path-123" not in html
    assert secret not in html


def test_old_finished_deliveries_are_pruned_with_their_log(team, alice):
    _channels_with_log(team, alice, 1)
    assert deliveries_prune(now=timezone.now(), older_than=timedelta(days=30)) == 0
    assert (
        deliveries_prune(now=timezone.now() + timedelta(days=31), older_than=timedelta(days=30))
        == 2
    )
    assert not DeliveryAttempt.objects.exists()


def test_every_kind_is_pickable_in_the_form_the_api_and_its_openapi_schema(api, client, alice):
    """One list of kinds (notifyrules.Kind): the forecast kind among them, everywhere."""
    kinds = [k.value for k in Kind]
    assert "pool_forecast_dry" in kinds
    document = client.get("/api/v1/openapi.json").json()
    assert (
        document["components"]["schemas"]["ChannelIn"]["properties"]["kinds"]["items"]["enum"]
        == kinds
    )
    made = api.post(
        "/teams/acme/channels",
        {**HOOK, "target": "http://127.0.0.1:9/x", "kinds": ["pool_forecast_dry"]},
    )
    assert made.json()["kinds"] == ["pool_forecast_dry"]
    client.force_login(alice)
    page = client.get(reverse("channels", args=["acme"])).content.decode()
    assert 'value="pool_forecast_dry"' in page
    assert "forecast to run dry within the hour" in page
    client.post(
        reverse("channel", args=["acme", made.json()["id"]]),
        {"name": "hook", "target": "", "kinds": ["pool_dry", "pool_forecast_dry"], "enabled": "on"},
    )
    assert Channel.objects.get().kinds == ["pool_dry", "pool_forecast_dry"]
