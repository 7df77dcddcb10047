"""The pages in a real browser (Debian's chromium driven by Playwright), against a live server
and a local stand-in for the provider's login, token and usage endpoints.

Screenshots of the pool page and the account page land in test-artifacts/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect, sync_playwright

from accounts_pool.models import Account, Membership, Pool, Team
from accounts_pool.services.invites import invite_create
from accounts_pool.templatetags.pool_tags import absolute

from .conftest import CHROMIUM, POLICY_MESSAGE, make_account
from .fake_provider import FakeAnthropic, fake_anthropic

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the tests
    # themselves are ordinary blocking calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def provider_server(settings) -> Iterator[FakeAnthropic]:
    with fake_anthropic(set()) as fake:
        for name, value in fake.env().items():
            setattr(settings, name, value)
        yield fake


@pytest.fixture
def world(db):
    team = Team.objects.create(name="Acme", slug="acme")
    pool = Pool.objects.create(team=team, name="Claude", slug="claude")
    users = {}
    for name, role in (("alice", "lead"), ("bob", "member"), ("charlie", None)):
        users[name] = User.objects.create_user(name, password=f"{name}-password-1")
        if role:
            Membership.objects.create(team=team, user=users[name], role=role)
    now = timezone.now()
    blocked = make_account(
        pool,
        label="blocked by policy",
        policy_status="blocked",
        policy_message=POLICY_MESSAGE,
        policy_since=now - timedelta(hours=1),
        quota_checked_at=now,
    )
    backoff = make_account(
        pool,
        label="backing off",
        access_expires_at=now - timedelta(minutes=2),
        refresh_backoff_until=now + timedelta(minutes=30),
        refresh_failures=1,
        refresh_error_kind="rejected",
        refresh_error_status=403,
        refresh_error_message="non-JSON HTML body",
        refresh_error_at=now,
        quota_checked_at=now,
    )
    return {"pool": pool, "users": users, "blocked": blocked, "backoff": backoff}


def _log_in(browser: Browser, live_server, name: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", name)
    page.fill("#id_password", f"{name}-password-1")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def _paste_login_code(page: Page, label: str | None) -> None:
    with page.expect_popup() as popup_info:
        page.click("#authorize-link")
    popup = popup_info.value
    code = popup.locator("#code").inner_text()
    popup.close()
    page.fill("#id_code", code)
    if label is not None:
        page.fill("#id_label", label)
    page.click("#code-form button")
    page.wait_for_load_state()


def _row(page: Page, account: Account):
    return page.locator(f"tr[data-account='{account.pk}']")


def test_a_lead_sees_why_onboards_by_login_and_clears_a_backoff(
    browser, live_server, world, provider_server
):
    ARTIFACTS.mkdir(exist_ok=True)
    page = _log_in(browser, live_server, "alice")
    page.goto(f"{live_server.url}/pools/claude/")
    blocked, backoff = _row(page, world["blocked"]), _row(page, world["backoff"])
    expect(blocked.locator(".reason-words")).to_have_text("blocked by org policy")
    expect(blocked.locator(".reason-words")).to_have_attribute("title", re.compile(POLICY_MESSAGE))
    expect(blocked.locator(".badge")).to_have_text("✕ Excluded")
    until = world["backoff"].refresh_backoff_until
    expect(backoff.locator(".reason-words")).to_have_text("token refresh failing")
    expect(backoff.locator(".reason-words")).to_have_attribute(
        "title", re.compile("HTTP 403 from the token endpoint")
    )
    expect(backoff.locator(".until-cell time")).to_have_attribute("title", absolute(until))
    expect(backoff.locator(".until-cell")).to_contain_text(re.compile(r"in (29|30) min"))
    page.screenshot(path=str(ARTIFACTS / "pool-page.png"), full_page=True)

    page.click("text=Add account")
    page.click("#start-login")
    _paste_login_code(page, "ana via login")
    expect(page.locator(".messages")).to_contain_text("checked with the provider and added")
    assert provider_server.calls["exchange"] == 1
    added = Account.objects.get(label="ana via login")
    assert added.email.endswith("@fake.test")
    page.screenshot(path=str(ARTIFACTS / "account-page.png"), full_page=True)

    page.goto(f"{live_server.url}/pools/claude/")
    expect(_row(page, world["backoff"])).to_contain_text("token refresh failing")
    other = browser.new_page()
    other.context.add_cookies(page.context.cookies())
    other.goto(f"{live_server.url}/accounts/{world['backoff'].pk}/")
    other.click("button[data-lever='clear-backoff']")
    expect(other.locator(".messages")).to_contain_text("Cleared the refresh backoff")
    page.evaluate("window.accountsPoolRefresh()")  # what the 30-second timer does
    row = _row(page, world["backoff"])
    expect(row).not_to_contain_text("token refresh failing")
    expect(row.locator(".reason-words")).to_have_text("token expired")
    page.close()


def test_a_member_adds_their_own_account_through_an_invite_link(
    browser, live_server, world, provider_server
):
    _, token = invite_create(pool=world["pool"], user=world["users"]["alice"])
    page = _log_in(browser, live_server, "bob")
    page.goto(f"{live_server.url}/invite/{token}/")
    page.click("#start-login")
    _paste_login_code(page, "bob's max plan")
    expect(page.locator(".messages")).to_contain_text("was added to Claude")
    expect(page.locator("table.accounts")).to_contain_text("bob's max plan")
    again = page.goto(f"{live_server.url}/invite/{token}/")
    assert again is not None
    assert again.status == 409
    page.close()


def test_an_outsider_gets_404_on_the_teams_pages(browser, live_server, world):
    page = _log_in(browser, live_server, "charlie")
    for path in (
        "/teams/acme/",
        "/pools/claude/",
        f"/accounts/{world['blocked'].pk}/",
        "/pools/claude/add/",
        "/pools/claude/keys/",
    ):
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None, path
        assert response.status == 404, path
        expect(page.locator("body")).not_to_contain_text("blocked by policy")
    page.close()


SELECTED_TEXT = """() => {
  const el = document.activeElement;
  return el.value.slice(el.selectionStart, el.selectionEnd);
}"""


def test_the_pages_run_under_the_content_security_policy(browser, live_server, world):
    """No inline script, handler or style anywhere: the policy forbids them, so each would
    be refused (a console error) and its behaviour lost. Each behaviour that used to be inline
    still works, from app.js."""
    from accounts_pool.models import QuotaWindow

    now = timezone.now()
    QuotaWindow.objects.create(
        account=world["backoff"], key="five_hour", label="5-hour", utilization=60.0,
        resets_at=now + timedelta(hours=2), checked_at=now,
    )  # fmt: skip
    other = Team.objects.create(name="Zeta", slug="zeta")
    Membership.objects.create(team=other, user=world["users"]["alice"], role="lead")
    world["users"]["alice"].is_staff = world["users"]["alice"].is_superuser = True
    world["users"]["alice"].save()

    page = _log_in(browser, live_server, "alice")
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    page.on("pageerror", lambda error: refused.append(str(error)))

    page.goto(f"{live_server.url}/pools/claude/")
    policy = page.evaluate(
        "() => fetch(location.href).then(r => r.headers.get('content-security-policy'))"
    )
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    fill = _row(page, world["backoff"]).locator(".bar .fill")
    ratio = "(e) => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width"
    assert abs(fill.evaluate(ratio) - 0.6) < 0.02  # drawn 60% wide with no style attribute

    page.goto(f"{live_server.url}/accounts/{world['backoff'].pk}/")
    with page.expect_navigation():
        page.select_option("#op", "token_refresh")  # data-autosubmit
    assert "operation=token_refresh" in page.url

    page.goto(f"{live_server.url}/pools/claude/keys/")
    page.fill("#id_name", "laptop")
    page.click("#key-form button")
    page.click("#new-key")  # data-select-on-click (ui.js)
    selected = page.evaluate(SELECTED_TEXT)
    assert selected.startswith("apk_")
    assert selected == page.input_value("#new-key")

    page.goto(f"{live_server.url}/pools/claude/")
    with page.expect_navigation():
        page.select_option("#team-select", label="Zeta")  # data-navigate
    assert page.url.endswith("/teams/zeta/")

    for path in ("/me/tokens/", "/admin/", "/admin/accounts_pool/account/", "/api/v1/docs"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
    assert refused == []
