"""Every setting read from the environment is listed in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_variable_the_settings_read():
    settings = (ROOT / "config" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', settings))
    read |= set(re.findall(r'_required\("([A-Z0-9_]+)"\)', settings))
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.M))
    assert read, "no variables found: the pattern is stale"
    assert read - listed == set()


def test_a_refresh_claim_no_longer_than_the_provider_timeout_is_refused(settings):
    from django.core import checks

    settings.ACCOUNTS_POOL_CLAIM_SECONDS = 20
    settings.ANTHROPIC_HTTP_TIMEOUT = 20.0
    errors = [m for m in checks.run_checks(tags=["accounts_pool"]) if m.id == "accounts_pool.E010"]
    assert len(errors) == 1
    assert "ACCOUNTS_POOL_CLAIM_SECONDS (20)" in errors[0].msg
    settings.ACCOUNTS_POOL_CLAIM_SECONDS = 120
    assert checks.run_checks(tags=["accounts_pool"]) == []
