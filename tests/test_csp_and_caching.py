"""A Content-Security-Policy without 'unsafe-inline', no inline script, handler or style in
any template (so the policy breaks nothing: tests/test_browser.py runs the pages under it), and
`Cache-Control: no-store` on every answer that carries a secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from accounts_pool.models import Pool
from accounts_pool.services.keys import api_token_create
from accounts_pool.services.onboarding import account_create_api_key

from .api import Api

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(
    [*(ROOT / "templates").rglob("*.html"), *(ROOT / "accounts_pool").rglob("templates/**/*.html")]
)
INLINE = {
    "event handler attribute": re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE),
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I),
    "style attribute": re.compile(r"<[^>]*\sstyle\s*=", re.IGNORECASE),
    "<style> element": re.compile(r"<style[\s>]", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
}


def test_there_are_templates_to_scan() -> None:
    assert len(TEMPLATES) >= 15


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_has_inline_script_or_style(template: Path) -> None:
    text = template.read_text()
    found = {what: pattern.findall(text) for what, pattern in INLINE.items()}
    assert not {what: hits for what, hits in found.items() if hits}


@pytest.mark.django_db
def test_a_json_answer_allows_nothing_and_the_api_docs_page_gets_the_pages_policy(
    alice: User,
) -> None:
    client = Client()
    client.force_login(alice)
    for path in ("/api/v1/teams", "/api/v1/nothing-here"):  # an answer, and an error
        assert client.get(path)["Content-Security-Policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
    assert "'self'" in client.get("/api/v1/docs")["Content-Security-Policy"]


@pytest.mark.django_db
def test_pages_carry_the_policy(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    for path in ("/login/", "/me/tokens/", "/admin/login/"):
        policy = client.get(path)["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy


@pytest.mark.django_db
def test_every_answer_that_carries_a_secret_is_no_store(alice: User, pool: Pool, provider) -> None:
    account_create_api_key(pool=pool, label="spare", api_key="sk-ant-api03-spare", actor="test")
    _, token = api_token_create(user=alice, name="cli")
    lead = Api(token)
    answers = {
        "new consumer key (API)": lead.post("/pools/claude/consumer-keys", {"name": "tool"}),
        "new API token (API)": lead.post("/me/tokens", {"name": "ci"}),
        "OAuth login start (API)": lead.post("/pools/claude/oauth/start", {}),
    }
    key = answers["new consumer key (API)"].json()["key"]
    answers["checkout (API)"] = Api(key).post("/pools/claude/checkout", {})
    assert answers["checkout (API)"].json()["credential"]["api_key"] == "sk-ant-api03-spare"

    browser = Client()
    browser.force_login(alice)
    answers["new consumer key (page)"] = browser.post(
        "/pools/claude/keys/", {"name": "laptop"}, follow=True
    )
    answers["new API token (page)"] = browser.post(
        "/me/tokens/", {"name": "x", "expires_in_days": "7"}, follow=True
    )
    answers["invite link (page)"] = browser.post("/pools/claude/invites/", {}, follow=True)
    answers["login start (page)"] = browser.post("/pools/claude/login/start/", follow=True)
    for what, response in answers.items():
        assert response.status_code in (200, 201), (what, response.content[:300])
        assert response["Cache-Control"] == "no-store", what
    assert "apk_" in answers["new consumer key (page)"].content.decode()
    assert "/invite/" in answers["invite link (page)"].content.decode()


@pytest.mark.django_db
@override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=True)
def test_static_files_keep_their_own_cache_headers() -> None:
    # whitenoise answers before the no-store middleware (each test Client builds its own
    # middleware, so these settings hold).
    response = Client().get("/static/accounts_pool/app.css")
    assert response.status_code == 200
    assert "max-age" in response["Cache-Control"]
    assert "no-store" not in response["Cache-Control"]
