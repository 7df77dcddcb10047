"""/healthz says which part is down; /metrics is for Prometheus and nobody else."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from .conftest import POLICY_MESSAGE, make_account


def test_healthz_is_ok_when_the_database_and_broker_answer(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "secrets": "ok"}


def test_healthz_names_the_broker_when_it_is_down(client, db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.HEALTHZ_BROKER_TIMEOUT = 0.5
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("broker: ")


def test_healthz_answers_within_its_bound_with_the_broker_blackholed(client, db, settings):
    settings.HEALTHZ_TIMEOUT = 0.5
    with socket.socket() as hole:  # the kernel accepts (backlog), nobody answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{hole.getsockname()[1]}/0"
        started = time.monotonic()
        body = client.get("/healthz").json()
        took = time.monotonic() - started
    assert body["broker"] == "broker: no answer within 0.5 s"
    assert body["database"] == "ok"
    assert took < 2, took  # it took 2 s with the broker merely refused


@pytest.fixture
def scraper(client, settings):
    """A Prometheus that sends the scrape token."""
    settings.METRICS_TOKEN = "scrape-secret"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scrape-secret"
    return client


def test_metrics_count_accounts_by_status_and_reason_per_pool(scraper, pool):
    now = timezone.now()
    make_account(pool, label="blocked", policy_status="blocked", policy_message=POLICY_MESSAGE)
    make_account(pool, label="cooling", cooldown_until=now + timedelta(minutes=5))
    text = scraper.get("/metrics").content.decode()
    assert 'accounts_pool_accounts{pool="claude",status="excluded"} 2.0' in text
    assert 'accounts_pool_account_reasons{pool="claude",reason="org_policy_blocked"} 1.0' in text
    assert 'accounts_pool_account_reasons{pool="claude",reason="cooldown"} 1.0' in text


def test_metrics_trust_no_network_by_default_not_even_loopback(client, db):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 403


def test_metrics_answer_clients_in_networks_an_operator_allowed(client, db, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_metrics_refuse_clients_outside_the_allowed_networks(client, db, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_refresh_outcomes_are_counted(scraper, pool, provider):
    from accounts_pool.services.refresh import account_refresh

    account = make_account(pool, access_expires_at=timezone.now() - timedelta(minutes=1))
    provider.token.respond(403)
    account_refresh(account_id=account.pk)
    text = scraper.get("/metrics").content.decode()
    line = next(
        row
        for row in text.splitlines()
        if row.startswith('accounts_pool_refresh_total{outcome="rejected"}')
    )
    assert float(line.split()[-1]) >= 1


def test_livez_answers_without_touching_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/livez")
    assert response.content == b"ok\n"
