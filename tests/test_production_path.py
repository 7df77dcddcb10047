"""The documented production commands, as an operator runs them: migrate and collectstatic,
then gunicorn, two Celery workers and one beat against DATABASE_URL and CELERY_BROKER_URL
(PostgreSQL and Redis in CI; a fresh database of its own, a queue of its own), and an account
onboarded through the API is refreshed by the cycle. Beat ticks every few seconds here
(ACCOUNTS_POOL_BEAT_SECONDS); the default schedule's minute is tested in test_beat_interval."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from . import processes
from .fake_provider import fake_anthropic

pytestmark = pytest.mark.slow
REFRESH = "sk-ant-ort01-production-path"


def _procfile() -> dict[str, str]:
    lines = (processes.ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:
    """A fresh, empty database of the configured kind, dropped afterwards."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        yield f"sqlite:///{tmp_path / 'production.sqlite3'}"
        return
    import psycopg

    name = f"accounts_pool_prod_{secrets.token_hex(4)}"
    params: dict[str, Any] = {
        "host": db.get("HOST") or "127.0.0.1",
        "port": db.get("PORT") or 5432,
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    auth = params["user"] + (f":{params['password']}" if params["password"] else "")
    yield f"postgres://{auth}@{params['host']}:{params['port']}/{name}"
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=processes.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _call(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except OSError:
        return 0, {}
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {}


def _status(url: str) -> int:
    return _call(url)[0]


ONBOARD_LEAD = (
    "from django.contrib.auth.models import User; "
    "from accounts_pool.models import Membership, Pool, Team; "
    "user = User.objects.create_user('ops'); team = Team.objects.create(name='Ops', slug='ops'); "
    "Membership.objects.create(team=team, user=user, role='lead'); "
    "Pool.objects.create(team=team, name='Prod', slug='prod')"
)


def test_the_production_commands_serve_and_the_cycle_refreshes(tmp_path, database_url):
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    procfile = _procfile()
    with fake_anthropic({REFRESH}) as fake, processes.own_queue() as queue:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(
            fake.env(),
            PATH=f"{processes.VENV_BIN}:{env['PATH']}",
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            SECRET_KEY="production-path-test",
            DEBUG="false",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            ACCOUNTS_POOL_VAR_DIR=str(tmp_path / "var"),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
            METRICS_ALLOWED_NETWORKS="127.0.0.1/32",  # no proxy here: loopback is this test
            PORT=str(port),
            WEB_CONCURRENCY="2",
            WORKER_CONCURRENCY="2",
            CELERY_TASK_DEFAULT_QUEUE=queue,
            ACCOUNTS_POOL_BEAT_SECONDS=processes.BEAT_SECONDS,
        )
        (tmp_path / "metrics").mkdir()
        _run(procfile["release"], env)
        _run(f"python manage.py shell -c {shlex.quote(ONBOARD_LEAD)}", env)
        token = _run("python manage.py create_api_token ops", env).strip()
        started = []
        try:
            for n, name in enumerate(("web", "worker", "worker", "beat")):
                log = tmp_path / f"{n}-{name}.log"
                process = processes.start(["bash", "-c", f"exec {procfile[name]}"], env, log)
                started.append((process, log))
            processes.wait_for(lambda: _status(f"{base}/healthz") == 200, 60, "web", started[0][1])
            # An access token that expires in 10 minutes: the usage check accepts it, and the
            # cycle must refresh it ahead of expiry.
            expires = datetime.now(UTC) + timedelta(minutes=10)
            status, body = _call(
                f"{base}/api/v1/pools/prod/accounts",
                token,
                {
                    "label": "prod",
                    "kind": "oauth",
                    "refresh_token": REFRESH,
                    "access_token": "sk-ant-oat01-onboarded",
                    "expires_at": expires.isoformat(),
                },
            )
            assert status == 201, body
            account_url = f"{base}/api/v1/accounts/{body['account']['id']}"

            def refreshed() -> bool:
                return (
                    _call(account_url, token)[1].get("refresh", {}).get("last_refreshed_at")
                    is not None
                )

            processes.wait_for(refreshed, 60, "the cycle's refresh", started[-1][1])
            assert fake.calls["token"] == 1
            assert _status(f"{base}/static/accounts_pool/app.css") == 200
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
            assert 'accounts_pool_refresh_total{outcome="refreshed"}' in metrics
        finally:
            for process, _ in started:
                processes.stop(process, timeout=30)
