"""CVE-2024-7592: Python's http.cookies is quadratic in a cookie value's backslashes before
3.11.10 and 3.12.6, and 20 Cookie headers of 8 KB of backslashes held a sync worker until
gunicorn's timeout. The app refuses such an interpreter, and bounds the Cookie header before
Django parses it whatever the interpreter (bench/cookies.py times the request)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from packaging.specifiers import SpecifierSet

from accounts_pool import checks

ROOT = Path(__file__).resolve().parent.parent
FLAWED = [(3, 11, 7), (3, 11, 9), (3, 12, 0), (3, 12, 5), (3, 10, 14)]
PATCHED = [(3, 11, 10), (3, 11, 14), (3, 12, 6), (3, 12, 12), (3, 13, 0), (3, 14, 2)]
ATTACK_HEADER = "; ".join(f"c{i}=" + "\\" * 8000 for i in range(20))


@pytest.mark.parametrize("version", FLAWED)
def test_a_flawed_interpreter_is_named_with_the_fix(version) -> None:
    flaw = checks.cookie_flaw(version)
    assert flaw is not None
    assert "CVE-2024-7592" in flaw
    assert "3.11.10" in flaw
    assert "scripts/setup" in flaw


@pytest.mark.parametrize("version", PATCHED)
def test_a_patched_interpreter_passes(version) -> None:
    assert checks.cookie_flaw(version) is None


def test_the_interpreter_running_the_tests_is_patched() -> None:
    # CI runs scripts/setup's choice: a flawed one here means setup chose wrong.
    assert checks.cookie_flaw(sys.version_info) is None
    assert not [m for m in run_checks() if m.id == checks.COOKIE_CHECK_ID]


def test_pyproject_admits_exactly_the_patched_versions() -> None:
    spec = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    for version in FLAWED:
        assert ".".join(map(str, version)) not in spec, version
    for version in PATCHED:
        assert ".".join(map(str, version)) in spec, version


def test_the_servers_refuse_a_flawed_interpreter(monkeypatch) -> None:
    monkeypatch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
    with pytest.raises(ImproperlyConfigured, match="CVE-2024-7592"):
        checks.refuse_flawed_interpreter()
    messages = [m for m in run_checks() if m.id == checks.COOKIE_CHECK_ID]
    assert len(messages) == 1
    assert messages[0].is_serious()
    with override_settings(SILENCED_SYSTEM_CHECKS=[checks.COOKIE_CHECK_ID]):
        checks.refuse_flawed_interpreter()  # an operator who knows better may silence it


def test_the_wsgi_and_asgi_modules_run_the_refusal() -> None:
    for module in ("config/wsgi.py", "config/asgi.py"):
        assert "refuse_flawed_interpreter()" in (ROOT / module).read_text()
    # And they load on this (patched) interpreter.
    done = subprocess.run(
        [sys.executable, "-c", "import config.wsgi, config.asgi"],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "config.test_settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "shape"),
    [("/api/v1/teams", "api"), ("/relay/anthropic/v1/messages", "relay"), ("/login/", "page")],
)
def test_an_oversized_cookie_header_is_refused_before_it_is_parsed(
    path, shape, monkeypatch
) -> None:
    parsed = []
    import django.http.cookie

    real = django.http.cookie.parse_cookie

    def spy(cookie: str) -> dict[str, str]:
        parsed.append(len(cookie))
        return real(cookie)

    monkeypatch.setattr("django.core.handlers.wsgi.parse_cookie", spy)
    response = Client().post(path, "{}", content_type="application/json", HTTP_COOKIE=ATTACK_HEADER)
    assert response.status_code == 431
    assert parsed == []  # nothing read request.COOKIES
    assert response["Cache-Control"] == "no-store"
    if shape == "api":
        assert response.json()["error"]["code"] == "request_header_too_large"
    elif shape == "relay":
        body = response.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert response["Content-Type"].startswith("text/plain")


@pytest.mark.django_db
def test_ordinary_cookies_pass(alice) -> None:
    client = Client()
    client.force_login(alice)
    client.cookies["prefs"] = "x" * 2000  # a large but ordinary cookie
    assert client.get("/me/tokens/").status_code == 200


@pytest.mark.django_db
@override_settings(COOKIE_MAX_BYTES=100)
def test_the_limit_is_a_setting(monkeypatch) -> None:
    # The middleware reads the setting when the handler is built (each test client builds one).
    response = Client().get("/livez", HTTP_COOKIE="a=" + "b" * 120)
    assert response.status_code == 431


@pytest.mark.django_db
def test_the_relay_under_asgi_refuses_it_too() -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    response = async_to_sync(AsyncClient().post)(
        "/relay/anthropic/v1/messages",
        "{}",
        content_type="application/json",
        headers={"cookie": ATTACK_HEADER},
    )
    assert response.status_code == 431
    assert response.json()["error"]["type"] == "invalid_request_error"
