"""The checkout prefilter (checkout_sql) is held to state.eligibility: generated pools of
accounts in every state, each checked against the rules.

- every account eligibility finds usable or degraded is a candidate (the SQL never rules out
  an account the rules would use);
- checkout hands out a usable account when there is one, else a degraded one, and never an
  excluded one; with none, it answers NoUsableAccount.

500 examples on PostgreSQL (CI), fewer on SQLite (the quick local loop)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_pool import checkout_sql, state
from accounts_pool.crypto import fingerprint
from accounts_pool.models import Account, ConsumerKey, Pool
from accounts_pool.services.checkout import NoUsableAccount, checkout_create
from accounts_pool.services.keys import consumer_key_create

from .conftest import ACCESS, REFRESH

NOW = timezone.now()
MIN = timedelta(minutes=1)
# Offsets from now. A token expiring within 5 minutes is left out: checkout would refresh it
# at the provider first (tests/test_checkout.py covers that).
WHEN = st.sampled_from([None, -60 * MIN, -MIN, MIN, 90 * MIN])
EXPIRY = st.sampled_from([None, -60 * MIN, -MIN, 10 * MIN, 7 * 60 * MIN])
FINGERPRINT = fingerprint(REFRESH)


def _at(offset: timedelta | None) -> Any:
    return None if offset is None else NOW + offset


window = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["five_hour", "seven_day", "seven_day_opus"]),
        "utilization": st.sampled_from([None, 0.0, 50.0, 92.0, 100.0]),
        "resets_at": WHEN,
        "scoped": st.booleans(),
    }
)

account = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["oauth", "oauth", "api_key"]),
        "enabled": st.booleans(),
        "cooldown_until": WHEN,
        "credential_unreadable_at": st.sampled_from([None, -MIN]),
        "access_expires_at": EXPIRY,
        "refresh_token_fingerprint": st.sampled_from(["", FINGERPRINT]),
        "relogin_required_for": st.sampled_from(["", FINGERPRINT, "another"]),
        "refresh_backoff_until": WHEN,
        "refresh_error_kind": st.sampled_from(["", "access_rejected", "transient"]),
        "policy_status": st.sampled_from(["ok", "ok", "blocked"]),
        "quota_checked_at": st.sampled_from([None, -MIN, -600 * MIN]),
        "windows_observed_at": st.sampled_from([None, -MIN]),
        "quota_backoff_until": st.sampled_from([None, MIN]),
        "priority": st.sampled_from([10, 100]),
        "last_used_at": st.sampled_from([None, -MIN, -60 * MIN]),
        "windows": st.lists(window, max_size=3, unique_by=lambda w: w["key"]),
    }
)

pool_settings = st.fixed_dictionaries(
    {
        "routing": st.sampled_from([r.value for r in Pool.Routing]),
        "min_remaining_percent": st.sampled_from([0.0, 10.0]),
        "fail_closed_on_unknown_quota": st.booleans(),
    }
)


def _create(pool: Pool, n: int, spec: dict[str, Any]) -> Account:
    oauth = spec["kind"] == "oauth"
    expires = _at(spec["access_expires_at"]) if oauth else None
    created = Account.objects.create(
        pool=pool,
        label=f"a{n}",
        kind=spec["kind"],
        enabled=spec["enabled"],
        priority=spec["priority"],
        last_used_at=_at(spec["last_used_at"]),
        cooldown_until=_at(spec["cooldown_until"]),
        credential_unreadable_at=_at(spec["credential_unreadable_at"]),
        # Kept by the credential writers: a token is stored iff its expiry is.
        access_token=ACCESS if expires is not None else "",
        access_expires_at=expires,
        api_key="" if oauth else "sk-ant-api03-key",
        refresh_token=REFRESH if oauth and spec["refresh_token_fingerprint"] else "",
        refresh_token_fingerprint=spec["refresh_token_fingerprint"] if oauth else "",
        relogin_required_for=spec["relogin_required_for"],
        refresh_backoff_until=_at(spec["refresh_backoff_until"]),
        refresh_error_kind=spec["refresh_error_kind"],
        policy_status=spec["policy_status"],
        quota_checked_at=_at(spec["quota_checked_at"]),
        windows_observed_at=_at(spec["windows_observed_at"]),
        quota_backoff_until=_at(spec["quota_backoff_until"]),
    )
    for w in spec["windows"]:
        created.quota_windows.create(
            key=w["key"],
            label=w["key"],
            utilization=w["utilization"],
            resets_at=_at(w["resets_at"]),
            checked_at=NOW,
            model_name="Opus" if w["scoped"] else "",
        )
    return created


EXAMPLES = 500 if connection.vendor == "postgresql" else 60


@pytest.fixture
def key_hash(pool: Pool, alice: Any) -> str:
    key, _ = consumer_key_create(pool=pool, name="prop", created_by=alice)
    return key.key_hash


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no example file left in the clone
)
@given(
    accounts=st.lists(account, min_size=1, max_size=3),
    policy=pool_settings,
    model=st.sampled_from([None, "claude-opus-4-1", "claude-sonnet-4-5"]),
)
def test_the_prefilter_keeps_every_account_eligibility_would_use(
    pool: Pool, key_hash: str, accounts: list[dict[str, Any]], policy: dict[str, Any], model: Any
) -> None:
    Account.objects.filter(pool=pool).delete()
    Pool.objects.filter(pk=pool.pk).update(**policy)
    pool.refresh_from_db()
    created = [_create(pool, n, spec) for n, spec in enumerate(accounts)]
    verdicts = {
        a.pk: state.eligibility(
            Account.objects.get(pk=a.pk).state_snapshot(), pool.policy, NOW, model=model
        ).status
        for a in created
    }

    page = checkout_sql.candidates(key_hash, now=NOW)
    read = {c.account.pk for c in page.candidates}
    would_use = {pk for pk, status in verdicts.items() if status != state.Status.EXCLUDED}
    assert would_use <= read, (verdicts, read)

    try:
        result = checkout_create(key_hash=key_hash, model=model, now=NOW)
    except NoUsableAccount:
        assert not would_use
        return
    handed = verdicts[result.account.pk]
    assert handed != state.Status.EXCLUDED
    if state.Status.USABLE in verdicts.values():
        assert handed == state.Status.USABLE


def test_an_oauth_account_without_a_refresh_token_serves_while_its_token_is_valid(
    pool: Pool, key_hash: str
) -> None:
    """It used to be no candidate at all: an empty fingerprint equals the empty
    relogin_required_for, which the prefilter read as "needs a re-login"."""
    spec = {
        "kind": "oauth",
        "enabled": True,
        "cooldown_until": None,
        "credential_unreadable_at": None,
        "access_expires_at": 7 * 60 * MIN,
        "refresh_token_fingerprint": "",
        "relogin_required_for": "",
        "refresh_backoff_until": None,
        "refresh_error_kind": "",
        "policy_status": "ok",
        "quota_checked_at": -MIN,
        "windows_observed_at": None,
        "quota_backoff_until": None,
        "priority": 100,
        "last_used_at": None,
        "windows": [{"key": "five_hour", "utilization": 10.0, "resets_at": MIN, "scoped": False}],
    }
    created = _create(pool, 0, spec)
    assert created.verdict(NOW).status == state.Status.USABLE

    result = checkout_create(key_hash=key_hash, now=NOW)

    assert result.account.pk == created.pk
    assert result.credential["access_token"] == ACCESS
    assert ConsumerKey.objects.get(key_hash=key_hash).pool_id == pool.pk
