"""System checks (`manage.py check`, run before runserver and migrate) for settings whose wrong
values would break a promise silently rather than fail."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register


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
