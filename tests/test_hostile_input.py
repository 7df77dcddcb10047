"""Hostile input (deep nesting, lone surrogates, huge numbers, half-valid writes) gets the
documented 4xx, changes nothing, and leaves no traceback in the log."""

from __future__ import annotations

import logging

import pytest

from accounts_pool.models import AccountEvent
from accounts_pool.services.keys import api_token_create

from .api import Api, error_code


@pytest.fixture
def lead(alice, pool):
    return Api(api_token_create(user=alice, name="cli")[1])


@pytest.fixture
def no_traceback(caplog):
    """Fails the test when anything logs an error (Django logs a 500's traceback as one)."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def _nested(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("whitespace", ["   ", "\t\n"])
def test_it_refuses_a_blank_disabled_reason_before_changing_anything(
    lead, account, whitespace, no_traceback
):
    response = lead.patch(
        f"/accounts/{account.pk}",
        {"label": "renamed", "enabled": False, "disabled_reason": whitespace},
    )

    assert response.status_code == 422
    assert error_code(response) == "invalid"
    account.refresh_from_db()
    assert (account.label, account.enabled) == ("main", True)
    assert not AccountEvent.objects.filter(account=account).exists()
