"""Personas and a fixed clock.

alice leads team "acme", bob is a member of acme, charlie belongs to another team and must see
nothing of acme. NOW is fixed; services take `now` as an argument, so nothing patches the clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import respx
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone as django_timezone

from accounts_pool.crypto import fingerprint
from accounts_pool.models import Account, Membership, Pool, Team
from accounts_pool.services import usage as usage_services

from . import processes

# The tests' clock: this run's start, to the minute. Services under test take `now=NOW`, but the
# cycle, the API and the worker processes read the real clock, so fixtures must sit near it: a
# fixed date once made every real-clock test depend on the day it ran.
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
FIVE_HOUR_RESET = NOW + timedelta(hours=4)
SEVEN_DAY_RESET = NOW + timedelta(days=3, hours=20)
ACCESS = "sk-ant-oat01-access-token-of-the-test-account-0001"
REFRESH = "sk-ant-ort01-refresh-token-of-the-test-account-0001"
POLICY_MESSAGE = "OAuth authentication is currently not allowed for this organization."


@pytest.fixture
def team(db: None) -> Team:
    return Team.objects.create(name="Acme", slug="acme")


@pytest.fixture(scope="session", autouse=True)
def _no_stray_connections_at_teardown(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[None]:
    """The relay's worker threads (sync_to_async, thread_sensitive=False) keep a connection
    each for the life of the process, as they do in production; no request cycle closes them.
    Close them on PostgreSQL before the test database is dropped, which they would block."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session", autouse=True)
def _drop_the_default_queue() -> Iterator[None]:
    """Under pytest-xdist each worker sends its tasks to a queue of its own, which no Celery
    worker takes (config/test_settings.py): what it left there is dropped at the end."""
    yield
    if settings.CELERY_TASK_DEFAULT_QUEUE.startswith("tests-"):
        processes.queue_drop(settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.fixture(autouse=True)
def _forget_unwritten_usage() -> Iterator[None]:
    """Usage counted by one test and not flushed never reaches another's database."""
    yield
    usage_services.usage_discard()


@pytest.fixture
def alice(team: Team) -> User:
    user = User.objects.create_user("alice", password="alice-password-1")
    Membership.objects.create(team=team, user=user, role=Membership.Role.LEAD)
    return user


@pytest.fixture
def bob(team: Team) -> User:
    user = User.objects.create_user("bob", password="bob-password-1")
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def pool(team: Team) -> Pool:
    return Pool.objects.create(team=team, name="Claude", slug="claude")


def make_account(pool: Pool, **fields: Any) -> Account:
    """An OAuth account whose token is fresh and whose quota was just checked, unless told."""
    refresh = fields.pop("refresh_token", REFRESH)
    values: dict[str, Any] = {
        "label": "main",
        "access_token": ACCESS,
        "access_expires_at": NOW + timedelta(hours=7),
        "refresh_token": refresh,
        "refresh_token_fingerprint": fingerprint(refresh),
        "credential_version": 1,
        "quota_checked_at": NOW - timedelta(minutes=1),
        "policy_checked_at": NOW - timedelta(minutes=1),
    }
    values.update(fields)
    return Account.objects.create(pool=pool, **values)


def usable_account(pool: Pool, label: str, **fields: Any) -> Account:
    """make_account's account, its quota checked now, with a 5-hour window at 10%: one that
    checkout and the relay hand out."""
    now = django_timezone.now()
    fields.setdefault("quota_checked_at", now)
    account = make_account(pool, label=label, **fields)
    account.quota_windows.create(
        key="five_hour",
        label="5-hour",
        utilization=10,
        resets_at=now + timedelta(hours=4),
        checked_at=now,
    )
    return account


@pytest.fixture
def account(pool: Pool) -> Account:
    return make_account(pool)


def token_answer(
    access: str = "sk-ant-oat01-new-access", refresh: str | None = "sk-ant-ort01-new-refresh"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": 28800,
        "scope": "user:inference user:profile",
        "account": {"uuid": "acct-uuid-1", "email_address": "dev@acme.test"},
        "organization": {"uuid": "org-uuid-1", "name": "Acme Org"},
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return body


def usage_answer(five_hour: float = 25.0, seven_day: float = 61.0) -> dict[str, Any]:
    return {
        "five_hour": {"utilization": five_hour, "resets_at": FIVE_HOUR_RESET.isoformat()},
        "seven_day": {"utilization": seven_day, "resets_at": SEVEN_DAY_RESET.isoformat()},
        "seven_day_opus": None,
        "limits": [
            {
                "kind": "weekly_scoped",
                "group": "weekly",
                "percent": 40,
                "resets_at": SEVEN_DAY_RESET.isoformat(),
                "is_active": False,
                "scope": {"model": {"id": "claude-opus-4", "display_name": "Opus"}},
            }
        ],
    }


def policy_403() -> dict[str, Any]:
    return {"type": "error", "error": {"type": "permission_error", "message": POLICY_MESSAGE}}


class Provider:
    """The provider's endpoints, mocked with respx at the HTTP boundary."""

    def __init__(self, router: respx.Router) -> None:
        self.token = router.post(settings.ANTHROPIC_TOKEN_URL, name="token")
        self.usage = router.get(settings.ANTHROPIC_USAGE_URL, name="usage")
        self.profile = router.get(settings.ANTHROPIC_PROFILE_URL, name="profile")


@pytest.fixture
def provider() -> Iterator[Provider]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield Provider(router)


CHROMIUM = "/usr/bin/chromium"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `postgres` prove behaviour under real concurrency, and tests marked
    `browser` drive Debian's chromium. Without them they are skipped, unless
    ACCOUNTS_POOL_REQUIRE_SERVICES=1 (as in .ci/run, which provides both): then it is a failure."""
    missing = None
    if item.get_closest_marker("postgres") is not None and connection.vendor != "postgresql":
        missing = "needs PostgreSQL: set DATABASE_URL=postgres://… (CI does)"
    if item.get_closest_marker("browser") is not None and not os.path.exists(CHROMIUM):
        missing = f"needs {CHROMIUM} (apt-get install chromium; CI installs it)"
    if missing is None:
        return
    if os.environ.get("ACCOUNTS_POOL_REQUIRE_SERVICES") == "1":
        pytest.fail(missing)
    pytest.skip(missing)


def _run_order(item: pytest.Item) -> tuple[int, bool]:
    """Where a test runs: the slow tests without the database, then pytest-django's order (tests
    that roll back, then transactional ones, which flush the migrations' data away; the rest
    last), each part's slow tests first."""
    slow = item.get_closest_marker("slow") is not None
    marker = item.get_closest_marker("django_db")
    fixtures = set(getattr(item, "fixturenames", ()))
    flushes = {"transactional_db", "live_server"} & fixtures
    if flushes or (marker is not None and marker.kwargs.get("transaction")):
        return 2, not slow
    if marker is not None or "db" in fixtures:
        return 1, not slow
    return (0 if slow else 3), False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """scripts/test runs the suite on several pytest-xdist workers, handing out one test at a
    time in this order (_run_order): the long tests start early, spread over the workers, and the
    quick ones fill the gaps, instead of a minute-long test starting last while the other workers
    sit idle. Each worker has a test database of its own and runs its share in this order."""
    items.sort(key=_run_order)


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print where the browser tests left their screenshots, for a reviewer reading CI's log."""
    shots = sorted(p for p in ARTIFACTS.glob("*.png") if p.stat().st_mtime >= SESSION_STARTED)
    if shots:
        terminalreporter.write_sep("-", "screenshots written by the browser tests")
        for shot in shots:
            terminalreporter.write_line(str(shot))
