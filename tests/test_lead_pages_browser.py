"""A lead's pages in a real browser (Debian's chromium via Playwright) against a live server and
the local stand-in for the provider: a fresh administrator starts a team and runs it from the
pages alone; axe-core (pinned, from tests/vendor) checks every page visited; screenshots of the
pool and account pages at 1440 and 390 px land in test-artifacts/ (paths printed at the end)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from accounts_pool.models import ConsumerKey, Membership, Pool, QuotaWindow, Team

from .conftest import CHROMIUM, make_account
from .fake_provider import FakeAnthropic, fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.10.3" / "axe.min.js"
WIDTHS = {"desktop": 1440, "phone": 390}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        yield launched
        launched.close()


@pytest.fixture
def provider_server(settings) -> Iterator[FakeAnthropic]:
    with fake_anthropic(set()) as fake:
        for name, value in fake.env().items():
            setattr(settings, name, value)
        yield fake


def _axe(page: Page) -> None:
    """Zero axe-core violations of impact serious or critical on the page as it stands."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())  # evaluated over the DevTools protocol: no CSP applies
    violations = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
    )
    assert violations == [], f"{page.url}: {violations}"


def _shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for _device, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})


def _log_in(browser: Browser, live_server, name: str, password: str) -> Page:
    page = browser.new_page(viewport={"width": WIDTHS["desktop"], "height": 900})
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", name)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def _fill(page: Page, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        page.fill(f"#id_{name}", value)


def test_a_fresh_administrator_runs_a_team_from_the_pages_alone(
    browser, live_server, provider_server
):
    User.objects.create_superuser("root", password="root-password-1")
    User.objects.create_user("mia", password="mia-password-1")
    page = _log_in(browser, live_server, "root", "root-password-1")
    expect(page.locator("main")).to_contain_text("You are not in a team yet")
    _axe(page)

    page.click("text=Start a team")
    _fill(page, {"name": "Ops", "slug": "ops"})
    page.click("#team-form button")
    expect(page.locator(".messages")).to_contain_text("you are its lead")
    assert Membership.objects.get(user__username="root").role == "lead"
    _axe(page)

    page.click("text=New pool")
    _axe(page)
    _fill(page, {"name": "Claude ops", "slug": "claude-ops"})
    page.click("#pool-form button")
    expect(page.locator("h1")).to_contain_text("Add an account to Claude ops")
    _axe(page)

    page.goto(f"{live_server.url}/teams/ops/members/")
    _fill(page, {"username": "mia"})
    page.click("#member-form button")
    expect(page.locator("tr[data-member='mia']")).to_contain_text("Member")
    _axe(page)

    page.goto(f"{live_server.url}/pools/claude-ops/add/")
    page.click("#start-login")
    expect(page.locator(".steps")).to_contain_text("the login expires in")
    expect(page.locator(".steps")).not_to_contain_text(re.compile(r"\d{4}-\d\d-\d\dT"))
    with page.expect_popup() as popup_info:
        page.click("#authorize-link")
    popup = popup_info.value
    code = popup.locator("#code").inner_text()
    popup.close()
    page.fill("#id_code", code)
    page.fill("#id_label", "ana")
    page.click("#code-form button")
    expect(page.locator(".messages")).to_contain_text("checked with the provider and added")

    page.goto(f"{live_server.url}/pools/claude-ops/keys/")
    page.fill("#id_name", "ci runner")
    page.click("#key-form button")
    expect(page.locator("#new-key")).to_have_value(
        re.compile("^" + ConsumerKey.objects.get().prefix)
    )
    expect(page.locator("button[data-copy='new-key']")).to_be_visible()
    _axe(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "keys-shown-once-1440.png"), full_page=True)
    page.click("button[data-copy='new-key']")
    expect(page.locator("button[data-copy='new-key']")).to_have_text("Copied")
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    assert ConsumerKey.objects.count() == 1  # the reload created no second key

    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("tr[data-key] button.danger")
    assert asked
    assert "Revoke “ci runner”?" in asked[0]
    assert ConsumerKey.objects.get().revoked_at is None  # dismissed: nothing revoked
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("tr[data-key] button.danger")
    expect(page.locator(".messages")).to_contain_text("revoked")
    assert ConsumerKey.objects.get().revoked_at is not None
    page.close()


@pytest.fixture
def busy_pool(db):
    """A lead's pool with one account in each state worth reading."""
    team = Team.objects.create(name="Acme", slug="acme")
    pool = Pool.objects.create(team=team, name="Claude", slug="claude")
    lead = User.objects.create_user("alice", password="alice-password-1")
    Membership.objects.create(team=team, user=lead, role="lead")
    now = timezone.now()
    accounts = {
        "healthy": make_account(pool, label="healthy", email="healthy@acme.test"),
        "relogin": make_account(
            pool,
            label="needs re-login",
            email="gone@acme.test",
            access_expires_at=now - timedelta(minutes=5),
            relogin_required_for="",
            refresh_error_kind="invalid_grant",
            refresh_error_message="refresh token revoked",
            refresh_error_at=now - timedelta(minutes=20),
        ),
        "backoff": make_account(
            pool,
            label="refresh failing",
            access_expires_at=now + timedelta(minutes=29),
            refresh_backoff_until=now + timedelta(minutes=35),
            refresh_failures=2,
            refresh_error_kind="rejected",
            refresh_error_status=403,
            refresh_error_message="non-JSON HTML body",
            refresh_error_at=now - timedelta(minutes=5),
        ),
        "cooldown": make_account(
            pool, label="rate limited", cooldown_until=now + timedelta(minutes=12)
        ),
    }
    relogin = accounts["relogin"]
    relogin.relogin_required_for = relogin.refresh_token_fingerprint
    relogin.save(update_fields=["relogin_required_for"])
    for n in range(6):
        accounts[f"spare {n}"] = make_account(pool, label=f"spare {n}", email=f"s{n}@acme.test")
    for n, account in enumerate(accounts.values()):
        for key, label, used, hours in (
            ("five_hour", "5-hour", (17 * n + 100 * (n == 3)) % 101, 3),
            ("seven_day", "7-day", (23 * n) % 90, 90),
        ):
            QuotaWindow.objects.create(
                account=account,
                key=key,
                label=label,
                utilization=float(used),
                resets_at=now + timedelta(hours=hours, minutes=7 * n),
                checked_at=now - timedelta(minutes=1),
            )
    return accounts


def test_a_lead_filters_by_needs_relogin_and_reads_the_cause_and_next_change(
    browser, live_server, busy_pool
):
    page = _log_in(browser, live_server, "alice", "alice-password-1")
    page.goto(f"{live_server.url}/pools/claude/")
    expect(page.locator("tr.row")).to_have_count(10)
    _axe(page)
    _shoot(page, "pool")

    page.click("a.chip[data-reason='needs_relogin']")
    expect(page).to_have_url(re.compile(r"reason=needs_relogin"))
    expect(page.locator("tr.row")).to_have_count(1)
    row = page.locator(f"tr[data-account='{busy_pool['relogin'].pk}']")
    expect(row.locator(".reason-words")).to_have_text("needs re-login")
    page.evaluate("window.accountsPoolRefresh()")  # what the 30-second timer does
    expect(page.locator("#pool-rows")).to_have_attribute("data-last-status", re.compile("200|304"))
    expect(page.locator("tr.row")).to_have_count(1)  # the refresh kept the filter

    row.locator("a").first.click()
    expect(page.locator("#refresh-group")).to_have_class(re.compile(r"\bcause\b"))
    expect(page.locator("#quota-group")).not_to_have_class(re.compile(r"\bcause\b"))
    expect(page.locator("#why")).to_contain_text("needs re-login")
    expect(page.locator("#next-change")).to_contain_text("it waits for a re-login")
    expect(page.locator("#refresh-next")).to_contain_text("no retry until someone logs in again")
    expect(page.locator("button[data-lever='relogin']")).not_to_have_class("secondary")
    expect(page.locator("button[data-lever='refresh']")).to_have_count(0)
    _axe(page)
    _shoot(page, "account")

    page.goto(f"{live_server.url}/accounts/{busy_pool['backoff'].pk}/")
    expect(page.locator("#next-change")).to_contain_text(
        "before the refresh retry at", ignore_case=False
    )
    expect(page.locator("#next-change")).to_contain_text("so the account is excluded from")
    page.close()


def test_a_refusal_is_a_styled_page_that_says_why(browser, live_server, busy_pool):
    member = User.objects.create_user("bob", password="bob-password-1")
    Membership.objects.create(team=Team.objects.get(), user=member, role="member")
    page = _log_in(browser, live_server, "bob", "bob-password-1")
    response = page.goto(f"{live_server.url}/pools/claude/keys/")
    assert response is not None
    assert response.status == 403
    expect(page.locator(".error-message")).to_contain_text("lead")
    expect(page.locator("header.top")).to_be_visible()  # the site's own layout, styled
    _axe(page)
    page.close()


def test_the_pages_follow_the_systems_dark_mode_and_stay_readable(browser, live_server, busy_pool):
    context = browser.new_context(color_scheme="dark", viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/pools/claude/")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 22, 28)"
    _axe(page)  # contrast included
    page.goto(f"{live_server.url}/accounts/{busy_pool['backoff'].pk}/")
    _axe(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "account-dark-1440.png"), full_page=True)
    context.close()
