"""The usage pictures in a real browser (Debian's chromium): screenshots at desktop and phone
widths in test-artifacts/, and axe-core finds nothing serious in them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, sync_playwright

from accounts_pool.models import Membership, Pool, Team
from accounts_pool.providers.anthropic import UsageWindow
from accounts_pool.services.keys import consumer_key_create
from accounts_pool.services.quota_history import quota_points_record
from accounts_pool.services.usage import usage_flush, usage_record
from accounts_pool.usage_meter import Tokens

from .conftest import CHROMIUM, make_account
from .test_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDTHS = (1440, 390)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def used_pool(db):
    """A pool with 7 days of usage by three keys, and an account whose windows rose and reset."""
    team = Team.objects.create(name="Acme", slug="acme")
    pool = Pool.objects.create(team=team, name="Claude", slug="claude")
    alice = User.objects.create_user("alice", password="alice-password-1")
    Membership.objects.create(team=team, user=alice, role=Membership.Role.LEAD)
    now = timezone.now()
    accounts = []
    for label in ("work", "spare"):
        account = make_account(pool, label=label, quota_checked_at=now)
        account.quota_windows.create(key="five_hour", label="5-hour", utilization=0, checked_at=now)
        account.quota_windows.create(key="seven_day", label="7-day", utilization=0, checked_at=now)
        accounts.append(account)
    keys = [consumer_key_create(pool=pool, name=n, created_by=alice)[0] for n in "abc"]
    for hours in range(7 * 24, -1, -1):
        at = now - timedelta(hours=hours)
        for i, key in enumerate(keys):
            if (hours + i) % 3:
                usage_record(
                    pool_id=pool.pk,
                    key_id=key.pk,
                    account_id=accounts[hours % 2].pk,
                    model="claude-sonnet-4-5",
                    tokens=Tokens(2000 * (i + 1), 500, 0, 3000 * (hours % 5)),
                    status=200,
                    duration_ms=1000,
                    now=at,
                )
        five_reset = at.replace(minute=0, second=0, microsecond=0) + timedelta(
            hours=5 - at.hour % 5
        )
        used = 100 * (5 - (five_reset - at).total_seconds() / 18000) / 5
        week = 100 * (7 * 24 - hours) / (7 * 24) * 0.8
        quota_points_record(
            accounts[0].pk,
            [
                UsageWindow("five_hour", "5-hour", used, five_reset),
                UsageWindow("seven_day", "7-day", week, now + timedelta(days=1)),
            ],
            at,
            "poll",
        )
    usage_flush()
    # The last hour, every 10 minutes: both accounts' 5-hour windows rising 30 points an hour.
    resets = now + timedelta(hours=3)
    for account in accounts:
        for minutes in (50, 40, 30, 20, 10):
            used = 60 - 30 * minutes / 60
            window = UsageWindow("five_hour", "5-hour", used, resets)
            quota_points_record(account.pk, [window], now - timedelta(minutes=minutes), "relay")
        account.quota_windows.filter(key="five_hour").update(utilization=60, resets_at=resets)
    return pool, accounts[0]


def _page(browser: Browser, live_server, width: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def _serious(page: Page, selector: str) -> list[str]:
    results = Axe().run(page, context=selector)
    return [
        f"{v['id']}: {v['help']}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_usage_charts_render_and_axe_finds_nothing_serious(
    browser, live_server, used_pool, width
):
    pool, account = used_pool
    page = _page(browser, live_server, width)
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{live_server.url}/pools/{pool.slug}/")
    chart = page.locator("#pool-usage svg.chart")
    assert chart.get_attribute("role") == "img"
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # the page fits
    assert page.locator("#pool-usage svg rect").count() > 100  # bars for a week of hours
    assert "runs dry" in page.locator("#pool-forecast").inner_text()
    page.locator("#pool-usage").screenshot(path=ARTIFACTS / f"usage-pool-{width}.png")
    assert _serious(page, "#pool-usage") == []
    page.goto(f"{live_server.url}/accounts/{account.pk}/")
    lines = page.locator("#account-usage svg path")
    assert lines.count() == 2  # the 5-hour and the 7-day window
    assert page.locator("#account-usage svg line[stroke-dasharray]").count() >= 20  # resets
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.locator("#account-usage").screenshot(path=ARTIFACTS / f"usage-account-{width}.png")
    assert _serious(page, "#account-usage") == []
    page.close()
