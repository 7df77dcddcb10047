"""The notification pages in Debian's chromium: a lead follows the navigation link, adds a
webhook, sees its secret once, sends a test to a real local receiver and reads the log; an
internal target is refused next to the field."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts_pool.models import Channel

from . import receivers
from .test_browser import ARTIFACTS, _log_in, browser, world  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_adds_a_webhook_sends_a_test_and_reads_the_log(
    browser,  # noqa: F811
    live_server,
    world,  # noqa: F811
    settings,
):
    ARTIFACTS.mkdir(exist_ok=True)
    page = _log_in(browser, live_server, "alice")
    page.goto(f"{live_server.url}/teams/acme/")
    page.click("nav.crumbs >> text=Notifications")
    with receivers.receiver(200) as hook:
        page.fill("#id_name", "on-call hook")
        page.select_option("#id_type", "webhook")
        page.fill("#id_target", hook.url)
        page.check("input[name=kinds][value=needs_relogin]")
        page.click("#channel-form button")
        secret = page.locator("#signing-secret").input_value()
        assert secret.startswith("whsec_")
        page.click("#send-test")
        expect(page.locator(".messages")).to_contain_text("Test message delivered (answer 200)")
        expect(page.locator("table.delivery-log tbody tr")).to_have_count(1)
        expect(page.locator("table.delivery-log")).to_contain_text("test")
        page.screenshot(path=str(ARTIFACTS / "notification-channel.png"), full_page=True)
    assert len(hook.accepted()) == 1
    assert secret not in page.content()  # shown once only
    expect(page.locator("#target")).to_have_text(f"http://127.0.0.1:{hook.port}/…")

    settings.ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS = False
    page.goto(f"{live_server.url}/teams/acme/notifications/")
    page.fill("#id_name", "metadata")
    page.fill("#id_target", "http://169.254.169.254/latest/meta-data/")
    page.check("input[name=kinds][value=pool_dry]")
    page.click("#channel-form button")
    expect(page.locator("#id_target-error")).to_contain_text("169.254.169.254")
    expect(page.locator("#id_target-error")).to_contain_text("private, loopback or link-local")
    page.screenshot(path=str(ARTIFACTS / "notification-refused.png"), full_page=True)
    assert Channel.objects.count() == 1
    page.close()
