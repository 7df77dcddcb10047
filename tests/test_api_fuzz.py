"""Hostile requests to every operation of the API: bodies nested past any stack, lone
surrogates, numbers of thousands of digits, NULs and odd Unicode in paths, queries and bodies.
None may make the server fail (5xx), and every refusal has the one error shape."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_pool.api.main import api
from accounts_pool.services.channels import channel_create
from accounts_pool.services.checkout import checkout_create
from accounts_pool.services.keys import api_token_create, consumer_key_create
from accounts_pool.services.onboarding import account_create_api_key

from .conftest import make_account, token_answer, usage_answer

DOCUMENT = api.get_openapi_schema()
OPERATIONS = sorted(
    (method.upper(), path, operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
)
TOOL_PATHS = ("/api/v1/pools/{pool}/checkout", "/api/v1/checkouts/{checkout_id}/report")
# Keys no schema names but the import reads (Claude Code's and anthropic-auth's files).
IMPORT_KEYS = ["claudeAiOauth", "version", "accounts", "refreshToken", "accessToken", "expiresAt"]
SCHEMA_KEYS = sorted(
    {
        name
        for schema in DOCUMENT["components"]["schemas"].values()
        for name in schema.get("properties", {})
    }
    | set(IMPORT_KEYS)
)


class Number(str):
    """A JSON number written out, so it can have more digits than Python will print."""


def _huge(digits: int) -> Number:
    return Number("9" * digits)


SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d"])
TEXT = st.one_of(
    st.text(max_size=12),
    SURROGATES,
    st.sampled_from(["", " ", "\x00", "a\x00b", "\u202e", "😀", "%00", "../..", "null", "9" * 30]),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30]),
    st.sampled_from([20, 400, 4_300, 4_301, 5_000]).map(_huge),
    st.sampled_from([Number("1e400"), Number("-1e400"), Number("1e-400"), Number("0.1e99999")]),
    st.floats(allow_nan=False, allow_infinity=False),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), TEXT), inner, max_size=3),
    ),
    max_leaves=8,
)


def _dump(value: Any) -> str:
    if isinstance(value, Number):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dump(str(k))}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii writes a lone surrogate as its \ud800 escape


@st.composite
def bodies(draw: st.DrawFn) -> str | None:
    fields = draw(st.dictionaries(st.sampled_from(SCHEMA_KEYS), VALUES, max_size=5))
    kind = draw(st.sampled_from(["fields", "fields", "any", "deep", "none", "garbage"]))
    if kind == "any":
        return _dump(draw(VALUES))
    if kind == "deep":
        depth = draw(st.sampled_from([31, 33, 450, 1_000, 20_000]))
        inner = "[" * depth + "]" * depth
        return _dump(fields)[:-1] + ("," if fields else "") + f'"deep":{inner}}}'
    if kind == "none":
        return None
    if kind == "garbage":
        return draw(st.sampled_from(["{", '{"a":', "\x00", "[" * 50_000, '"\\ud800"', "1" * 5_000]))
    return _dump(fields)


def _path_value(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


PATH_VALUES = st.one_of(TEXT.filter(bool), NUMBERS.map(str))


@pytest.fixture
def world(alice, pool, provider):
    """alice leads acme, whose pool holds an OAuth account, an API-key account, a consumer key
    and a checkout; the provider answers every call as a healthy account would."""
    now = timezone.now()
    provider.token.respond(200, json=token_answer())
    provider.usage.respond(200, json=usage_answer())
    provider.profile.respond(200, json=token_answer())
    account = make_account(pool, label="Primary", access_expires_at=now + timedelta(hours=7))
    account_create_api_key(pool=pool, label="Spare", api_key="sk-ant-api03-spare", actor="test")
    key, key_secret = consumer_key_create(pool=pool, name="Runner", created_by=alice)
    checkout = checkout_create(key_hash=key.key_hash).checkout
    channel, _ = channel_create(
        team=pool.team,
        name="Ops",
        channel_type="email",
        target="ops@acme.test",
        kinds=["pool_dry"],
        created_by=alice,
    )
    # The caller's own token that DELETE /me/tokens/{token_id} may revoke (not the one it calls
    # with, which would turn the rest of the run into 401s).
    spare_token, _ = api_token_create(user=alice, name="spare")
    return {
        "lead": api_token_create(user=alice, name="fuzz")[1],
        "key": key_secret,
        "real": {
            "team": pool.team.slug,
            "pool": pool.slug,
            "account_id": str(account.pk),
            "key_id": str(key.pk),
            "checkout_id": str(checkout.pk),
            "action": "clear-backoff",
            "channel_id": str(channel.pk),
            "token_id": str(spare_token.pk),
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
@given(data=st.data())
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_hostile_request_makes_the_api_fail(method, path, operation, data, world):
    url = path
    for name in re.findall(r"\{(\w+)\}", path):
        real = data.draw(st.booleans(), label=f"real {name}")
        value = world["real"][name] if real else data.draw(PATH_VALUES, label=name)
        url = url.replace(f"{{{name}}}", _path_value(value))
    query = {
        p["name"]: data.draw(PATH_VALUES, label=p["name"]).encode("utf-8", "surrogatepass")
        for p in operation.get("parameters", [])
        if p["in"] == "query" and data.draw(st.booleans())
    }
    if query:
        url += "?" + urlencode(query)
    body = data.draw(bodies(), label="body") if "requestBody" in operation else None
    secret = world["key"] if path in TOOL_PATHS else world["lead"]

    response = Client().generic(
        method,
        url,
        data=(body or "").encode("utf-8", "surrogatepass"),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code < 500, (url, body and body[:300], response.content[:500])
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        assert {"code", "message"} <= set(error), response.content[:500]
