"""Settings for the test suite: fixed secrets, provider URLs that only respx answers, and local
state under var/test. DATABASE_URL and CELERY_BROKER_URL still come from the environment, so the
same suite runs on SQLite and the filesystem broker, or on PostgreSQL and Redis (.ci/run)."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
# A fixed test key (never used outside tests).
os.environ.setdefault(
    "ACCOUNTS_POOL_ENCRYPTION_KEYS", "1ymJ6dG0g0ts6uj1Jd5Vx9X8Ff3yQZ0vJm8oHk3m9Yk="
)
os.environ.setdefault("ACCOUNTS_POOL_VAR_DIR", "var/test")
# pytest-xdist (scripts/test) runs the suite in several worker processes at once, gw0, gw1...,
# which inherit the environment of the process that starts them. Each worker keeps its local state
# (the SQLite test database, the filesystem broker) in a folder of its own, and sends its tasks to
# a queue of its own rather than Celery's "celery": no stray task of one worker's tests lands
# where another's count or take messages. The processes its tests start inherit both.
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    if os.environ["ACCOUNTS_POOL_VAR_DIR"] == "var/test":
        os.environ["ACCOUNTS_POOL_VAR_DIR"] = f"var/test/{worker}"
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:12]
    os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"tests-{run}-{worker}")
os.environ.setdefault("ANTHROPIC_TOKEN_URL", "https://platform.anthropic.test/v1/oauth/token")
os.environ.setdefault("ANTHROPIC_USAGE_URL", "https://api.anthropic.test/api/oauth/usage")
os.environ.setdefault("ANTHROPIC_PROFILE_URL", "https://api.anthropic.test/api/oauth/profile")
os.environ.setdefault("ANTHROPIC_AUTHORIZE_URL", "https://claude.anthropic.test/oauth/authorize")
os.environ.setdefault("ANTHROPIC_API_URL", "https://api.anthropic.test")
os.environ.setdefault("ANTHROPIC_HTTP_TIMEOUT", "5")
# Webhook receivers in the tests listen on loopback; the refusal tests turn this off.
os.environ.setdefault("ACCOUNTS_POOL_NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
os.environ.setdefault("ACCOUNTS_POOL_NOTIFY_TIMEOUT", "5")

from .settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests render pages without running collectstatic first.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# The test process writes counted usage only when a test flushes it (services/usage.py); the
# processes tests start set USAGE_FLUSH_SECONDS themselves.
USAGE_FLUSH_SECONDS = float(os.environ.get("USAGE_FLUSH_SECONDS", "86400"))

# The embedded broker's workers look for new messages every second (kombu's default); the tests'
# workers every 0.2 s, so that a test's chain of tasks is not a second per hop.
if CELERY_BROKER_URL.startswith("filesystem://"):  # noqa: F405
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = 0.2  # noqa: F405
