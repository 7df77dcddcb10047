"""With DEBUG off (as scripts/run now runs), a failure answers the site's own 500 page, which
shows nothing of the request: Django's debug page echoed the POST data, pasted tokens included."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

SECRET = "sk-ant-ort01-pasted-into-a-form-SECRET"


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.urls_boom", DEBUG=False)
def test_a_failure_answers_the_sites_500_page_without_the_request(alice) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.post("/boom/", {"refresh_token": SECRET, "label": "x"})
    page = response.content.decode()
    assert response.status_code == 500
    assert "could not answer this request" in page
    assert SECRET not in page
    assert "refresh_token" not in page
    assert "Traceback" not in page
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.urls_boom", DEBUG=True)
def test_the_debug_page_would_have_shown_it(alice) -> None:
    # Why DEBUG must be off: Django's technical 500 page lists the POST data.
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.post("/boom/", {"refresh_token": SECRET})
    assert response.status_code == 500
    assert "refresh_token" in response.content.decode()
