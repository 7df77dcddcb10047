"""The API describes itself: a valid OpenAPI 3 document with every path of DESIGN.md 4.3 and
browsable docs; and no request that the document allows makes the server fail (schemathesis)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from accounts_pool.services.checkout import checkout_create
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.services.onboarding import account_create_api_key
from config.wsgi import application

from .conftest import make_account, token_answer, usage_answer

DOCUMENT = "/api/v1/openapi.json"

DESIGN_PATHS = {
    ("GET", "/teams"),
    ("POST", "/teams"),
    ("POST", "/teams/{}/members"),
    ("GET", "/teams/{}/pools"),
    ("POST", "/teams/{}/pools"),
    ("GET", "/pools/{}"),
    ("PATCH", "/pools/{}"),
    ("POST", "/pools/{}/accounts"),
    ("POST", "/pools/{}/accounts/import"),
    ("POST", "/pools/{}/oauth/start"),
    ("POST", "/pools/{}/oauth/complete"),
    ("GET", "/accounts/{}"),
    ("PATCH", "/accounts/{}"),
    ("DELETE", "/accounts/{}"),
    ("GET", "/accounts/{}/events"),
    ("POST", "/accounts/{}/actions/{}"),
    ("POST", "/pools/{}/consumer-keys"),
    ("DELETE", "/pools/{}/consumer-keys/{}"),
    ("POST", "/pools/{}/checkout"),
    ("POST", "/checkouts/{}/report"),
}
TOOL_PATHS = ("/api/v1/pools/{pool}/checkout", "/api/v1/checkouts/{checkout_id}/report")


@pytest.fixture
def document(client):
    return client.get(DOCUMENT).json()


def test_the_served_document_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate(document)  # openapi-spec-validator: raises on any violation
    schemathesis.openapi.from_dict(document).validate()


def test_the_validation_would_catch_a_broken_document(document):
    broken = {**document, "paths": {"/teams": {"get": {"responses": ["not", "a", "map"]}}}}

    with pytest.raises(ValueError, match=r"\[\"responses\"\]"):
        schemathesis.openapi.from_dict(broken).validate()


def test_the_interactive_docs_are_served(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert DOCUMENT in response.content.decode()


def test_every_path_of_the_design_is_documented(document):
    documented = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path.removeprefix("/api/v1")))
        for path, operations in document["paths"].items()
        for method in operations
    }

    assert not DESIGN_PATHS - documented


def test_the_actions_are_documented_by_name(document):
    operation = document["paths"]["/api/v1/accounts/{account_id}/actions/{action}"]["post"]
    (action,) = [p for p in operation["parameters"] if p["name"] == "action"]

    assert set(action["schema"]["enum"]) == {"refresh", "check-quota", "clear-backoff"}


# --- Property-based: schemathesis over every operation --------------------------------------------

schema = schemathesis.openapi.from_wsgi(DOCUMENT, application)


@pytest.fixture
def in_process():
    """Serve requests inside the test's transaction, as Django's own test client does: a request
    must not close the connection that holds it."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(alice, pool, provider, in_process):
    """alice leads acme, whose pool holds an OAuth account, an API-key account, a consumer key
    and a checkout; the provider answers every call as a healthy account would."""
    now = timezone.now()
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(200, json=usage_answer())
    provider.profile.respond(200, json=token_answer())
    account = make_account(
        pool,
        label="Primary seat",
        access_expires_at=now + timedelta(hours=7),
        quota_checked_at=now,
    )
    account_create_api_key(pool=pool, label="Spare", api_key="sk-ant-api03-spare", actor="test")
    key, key_secret = consumer_key_create(pool=pool, name="Build runner", created_by=alice)
    checkout = checkout_create(key_hash=key.key_hash).checkout
    return {
        "lead": api_token_create(user=alice, name="fuzz")[1],
        "key": key_secret,
        "real": {
            "team": pool.team.slug,
            "pool": pool.slug,
            "account_id": account.pk,
            "key_id": key.pk,
            "checkout_id": str(checkout.pk),
        },
    }


@schema.parametrize()
@schema.given(real_objects=st.booleans())
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_the_document_allows_makes_the_server_fail(case, real_objects, world):
    """Some examples aim at objects that exist, so more than the 404 branch runs."""
    if real_objects and case.path_parameters:
        case.path_parameters = {
            name: world["real"].get(name, value) for name, value in case.path_parameters.items()
        }
    secret = world["key"] if case.operation.path in TOOL_PATHS else world["lead"]

    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {secret}"}, checks=[not_a_server_error]
    )

    assert response.status_code < 500
