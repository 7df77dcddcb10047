"""Hostile input (deep nesting, lone surrogates, huge numbers, half-valid writes) gets the
documented 4xx, changes nothing, and leaves no traceback in the log."""

from __future__ import annotations

import io
import logging

import pytest
from django.test import Client

from accounts_pool.models import Account, AccountEvent
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


@pytest.mark.parametrize("depth", [450, 1_000, 100_000])
def test_it_answers_deeply_nested_json_with_a_400(lead, depth, no_traceback):
    body = '{"name": "x", "slug": "ok", "deep": ' + _nested(depth) + "}"

    response = lead.post("/teams/acme/pools", raw=body)

    assert response.status_code == 400
    assert error_code(response) == "bad_request"
    assert "nested more than 32 levels deep" in response.json()["error"]["message"]


def test_it_answers_a_lone_surrogate_in_an_import_with_a_400(lead, no_traceback):
    body = '{"claudeAiOauth": {"refreshToken": "sk-ant-ort01-\\ud800", "accessToken": "a"}}'

    response = lead.post("/pools/claude/accounts/import", raw=body)

    assert response.status_code == 400
    assert error_code(response) == "bad_request"
    assert "lone surrogate" in response.json()["error"]["message"]
    assert not Account.objects.exists()


def test_it_shows_a_form_error_for_an_import_file_nested_1000_deep(alice, pool, no_traceback):
    client = Client()
    client.force_login(alice)
    upload = io.BytesIO(_nested(1_000).encode())
    upload.name = "credentials.json"

    response = client.post("/pools/claude/add/file/", {"file": upload})

    assert response.status_code == 400
    assert "nested more than 32 levels deep" in response.content.decode()
    assert not Account.objects.exists()


def test_it_answers_a_5000_digit_account_id_on_login_start_with_a_404(alice, pool, no_traceback):
    client = Client()
    client.force_login(alice)

    response = client.post("/pools/claude/login/start/", {"account_id": "9" * 5_000})

    assert response.status_code == 404


def test_an_id_that_decodes_to_a_slash_is_the_apis_json_404(lead, no_traceback):
    response = lead.get("/accounts/%2F")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
