"""System checks (`manage.py check`, run before runserver and migrate): an interpreter whose
cookie parser a single request can tie up, and settings whose wrong values would break a promise
silently rather than fail."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

COOKIE_CHECK_ID = "accounts_pool.E001"
# The first patched release of each line: http.cookies' _unquote is quadratic in a value's
# backslashes before these (CVE-2024-7592); 3.13.0 shipped with the fix.
COOKIE_FIXED_IN = {(3, 11): (3, 11, 10), (3, 12): (3, 12, 6)}


def cookie_flaw(version: tuple[int, ...]) -> str | None:
    """Why this Python version's cookie parser is unsafe, or None when it is patched."""
    major_minor = (version[0], version[1])
    fixed = COOKIE_FIXED_IN.get(major_minor)
    if version[:2] < (3, 11) or (fixed is not None and tuple(version[:3]) < fixed):
        found = ".".join(str(part) for part in version[:3])
        return (
            f"Python {found}'s http.cookies is quadratic (CVE-2024-7592): one request with "
            "large Cookie headers ties up a web worker for seconds. Run on Python 3.11.10+, "
            "3.12.6+ or 3.13+ (scripts/setup picks one when the machine has it, or run "
            "PYTHON=/path/to/python3.13 scripts/setup)."
        )
    return None


@register(Tags.security)
def check_cookie_parser(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    flaw = cookie_flaw(tuple(sys.version_info[:3]))
    if flaw is None:
        return []
    return [Error(flaw, hint="Upgrade the Python interpreter.", id=COOKIE_CHECK_ID)]


def refuse_flawed_interpreter() -> None:
    """For the servers (gunicorn, uvicorn), which run no system checks: the same refusal at
    start-up, unless the check is silenced in settings (SILENCED_SYSTEM_CHECKS)."""
    if COOKIE_CHECK_ID in settings.SILENCED_SYSTEM_CHECKS:
        return
    flaw = cookie_flaw(tuple(sys.version_info[:3]))
    if flaw is not None:
        raise ImproperlyConfigured(flaw)


@register("accounts_pool")
def refresh_claim_outlasts_provider_timeout(
    app_configs: Any = None, **_: Any
) -> list[CheckMessage]:
    """A refresh claim that lapses while its request may still be in flight lets another worker
    send the same single-use refresh token: the provider then rejects both."""
    claim = settings.ACCOUNTS_POOL_CLAIM_SECONDS
    timeout = settings.ANTHROPIC_HTTP_TIMEOUT
    if claim > timeout:
        return []
    return [
        Error(
            f"ACCOUNTS_POOL_CLAIM_SECONDS ({claim}) must be longer than ANTHROPIC_HTTP_TIMEOUT "
            f"({timeout:g}).",
            hint="A claim that lapses mid-request lets a second worker send the same refresh "
            "token; raise the claim (default 120) or lower the timeout (default 20).",
            id="accounts_pool.E010",
        )
    ]
