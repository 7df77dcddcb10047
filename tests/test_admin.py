"""The operators' admin: status and reasons from the one eligibility function, levers that leave
history, no secret on any page, and a query count that does not grow with the rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts_pool.models import Account, AccountEvent

from .conftest import ACCESS, POLICY_MESSAGE, REFRESH, make_account, token_answer

LIST = reverse("admin:accounts_pool_account_changelist")


@pytest.fixture
def now():
    return timezone.now()  # the admin reads the real clock


@pytest.fixture
def states(pool, now):
    """One account per state a team lead must understand at a glance."""
    healthy = make_account(
        pool, label="healthy", quota_checked_at=now, access_expires_at=now + timedelta(hours=7)
    )
    healthy.quota_windows.create(key="five_hour", label="5-hour", utilization=20, checked_at=now)
    return {
        "healthy": healthy,
        "blocked": make_account(
            pool,
            label="blocked",
            policy_status="blocked",
            policy_message=POLICY_MESSAGE,
            quota_checked_at=now,
            access_expires_at=now + timedelta(hours=7),
        ),
        "backoff": make_account(
            pool,
            label="backoff",
            access_expires_at=now - timedelta(minutes=1),
            refresh_backoff_until=now + timedelta(minutes=30),
            refresh_error_status=403,
            refresh_error_message="forbidden",
            quota_checked_at=now,
        ),
    }


def test_the_list_shows_status_reason_and_until(admin_client, states):
    page = admin_client.get(LIST).content.decode()
    assert (
        "org_policy_blocked: Blocked by the organisation&#x27;s policy: OAuth authentication"
        in page
    )
    until = states["backoff"].refresh_backoff_until
    assert "refresh_backoff: Token refresh failing (HTTP 403 from the token endpoint" in page
    assert f"({until:%H:%M} UTC, {until:%d %b %Y}))" in page  # relative first, then UTC
    assert page.count(">excluded<") == 2


def test_the_list_filters_by_status(admin_client, states):
    page = admin_client.get(LIST, {"status": "excluded"}).content.decode()
    assert ">blocked<" in page
    assert ">backoff<" in page
    assert ">healthy<" not in page


def test_no_page_shows_a_secret(admin_client, states):
    account = states["backoff"]
    AccountEvent.objects.create(account=account, at=timezone.now(), operation="admin", outcome="x")
    pages = [
        LIST,
        reverse("admin:accounts_pool_account_change", args=[account.pk]),
        reverse("admin:accounts_pool_accountevent_changelist"),
        reverse("admin:accounts_pool_pool_change", args=[account.pool.pk]),
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert ACCESS not in body, url
        assert REFRESH not in body, url
        assert "sk-ant" not in body, url


def test_the_change_page_shows_every_reason(admin_client, states):
    url = reverse("admin:accounts_pool_account_change", args=[states["blocked"].pk])
    page = admin_client.get(url).content.decode()
    assert "EXCLUDED" in page
    assert POLICY_MESSAGE in page
    assert "clears on success" in page


def _act(admin_client, action, *accounts, **extra):
    data = {"action": action, "_selected_action": [a.pk for a in accounts], **extra}
    return admin_client.post(LIST, data, follow=True)


def test_clear_backoff_lets_the_next_cycle_retry_and_leaves_history(admin_client, states):
    account = states["backoff"]
    response = _act(admin_client, "clear_backoff", account)
    assert "Account “backoff”: backoff cleared" in response.content.decode()
    account.refresh_from_db()
    assert account.refresh_backoff_until is None
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.actor) == (
        "admin",
        "backoff_cleared",
        "admin:admin",
    )


def test_disable_and_enable_record_who(admin_client, states):
    account = states["healthy"]
    _act(admin_client, "disable", account)
    account.refresh_from_db()
    assert (account.enabled, account.disabled_by) == (False, "admin:admin")
    _act(admin_client, "enable", account)
    account.refresh_from_db()
    assert account.enabled
    outcomes = list(AccountEvent.objects.order_by("id").values_list("outcome", flat=True))
    assert outcomes == ["disabled", "enabled"]


def test_refresh_now_calls_the_provider_once_and_reports(admin_client, states, provider):
    provider.token.respond(200, json=token_answer())
    response = _act(admin_client, "refresh_now", states["backoff"])
    assert "Account “backoff”: refresh refreshed" in response.content.decode()
    assert provider.token.call_count == 1


def test_events_are_read_only(admin_client, account):
    event = AccountEvent.objects.create(
        account=account, at=timezone.now(), operation="admin", outcome="x"
    )
    url = reverse("admin:accounts_pool_accountevent_change", args=[event.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(url, {"outcome": "changed"}).status_code == 403


ADD = reverse("admin:accounts_pool_account_add")


def test_an_operator_adds_an_account_from_its_refresh_token(admin_client, pool):
    response = admin_client.post(ADD, {"pool": pool.pk, "label": "new", "refresh_token": REFRESH})
    assert response.status_code == 302
    account = Account.objects.get(label="new")
    assert account.refresh_token == REFRESH
    assert account.access_expires_at is None  # due for refresh at once
    event = AccountEvent.objects.get(account=account)
    assert (event.operation, event.outcome, event.actor) == ("onboarding", "created", "admin:admin")


@pytest.mark.parametrize(
    ("data", "field_error"),
    [
        ({"label": "x"}, "This field is required."),
        (
            {"label": "x", "refresh_token": REFRESH, "access_token": ACCESS},
            "Give the expiry of the access token too, or leave the token out.",
        ),
        ({"label": "", "refresh_token": REFRESH}, "This field is required."),
    ],
)
def test_a_bad_add_form_says_why_changes_nothing_and_echoes_no_secret(
    admin_client, pool, data, field_error
):
    response = admin_client.post(ADD, {"pool": pool.pk, **data})
    body = response.content.decode()
    assert response.status_code == 200
    assert field_error in body
    assert REFRESH not in body
    assert ACCESS not in body
    assert Account.objects.count() == 0
    assert AccountEvent.objects.count() == 0


@pytest.mark.parametrize("rows", [10, 60])
def test_the_account_list_query_count_does_not_grow(
    admin_client, pool, now, rows, django_assert_max_num_queries
):
    for n in range(rows):
        account = make_account(pool, label=f"acct {n}", quota_checked_at=now)
        account.quota_windows.create(key="five_hour", label="5-hour", utilization=n, checked_at=now)
    with django_assert_max_num_queries(12):
        assert admin_client.get(LIST).status_code == 200
    assert Account.objects.count() == rows


def test_saving_the_form_does_not_undo_a_concurrent_refresh(admin_client, account):
    url = reverse("admin:accounts_pool_account_change", args=[account.pk])
    admin_client.get(url)
    Account.objects.filter(pk=account.pk).update(
        credential_version=7, refresh_backoff_until=timezone.now() + timedelta(hours=1)
    )
    response = admin_client.post(url, {"label": "renamed", "priority": 5, **_empty_inlines()})
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.label, account.priority, account.credential_version) == ("renamed", 5, 7)
    assert account.refresh_backoff_until is not None


def _empty_inlines():
    management = {}
    for prefix in ("quota_windows", "events"):
        management.update(
            {
                f"{prefix}-TOTAL_FORMS": "0",
                f"{prefix}-INITIAL_FORMS": "0",
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "0",
            }
        )
    return management


def test_the_change_form_offers_no_field_it_would_not_save(admin_client, account):
    """Every editable field of the change form is one the account service writes."""
    url = reverse("admin:accounts_pool_account_change", args=[account.pk])
    form = admin_client.get(url).context["adminform"].form
    assert sorted(form.fields) == ["label", "priority"]
    response = admin_client.post(
        url,
        {"label": "x", "priority": 1, "base_url": "https://elsewhere.example", **_empty_inlines()},
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.label, account.priority, account.base_url) == ("x", 1, "")


def test_the_account_list_is_sorted_by_the_column_its_arrow_marks(admin_client, pool):
    from .conftest import make_account

    make_account(pool, label="zed", priority=0)
    make_account(pool, label="amy", priority=5, refresh_token="sk-ant-ort01-amy")
    body = admin_client.get("/admin/accounts_pool/account/").content.decode()
    assert 'class="sortable column-label sorted ascending"' in body
    assert body.index(">amy<") < body.index(">zed<")


def test_the_admin_reads_times_relative_first_then_utc(admin_client, pool):
    from datetime import timedelta

    from django.utils import timezone

    from .conftest import make_account

    make_account(pool, label="waits", refresh_backoff_until=timezone.now() + timedelta(minutes=30))
    body = admin_client.get("/admin/accounts_pool/account/").content.decode()
    assert "in 29 min (" in body or "in 30 min (" in body
