"""The README's run command on the embedded defaults: `scripts/run` brings up the web app, a
worker and beat on SQLite and the filesystem broker, beat's cycle refreshes a due account, and
the run looks after its processes. One test: each start of the run migrates a database of its
own and starts five processes.

No DATABASE_URL or CELERY_BROKER_URL reaches the script, so no service is used even in CI."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from . import processes
from .fake_provider import fake_anthropic
from .test_supervise import pid_of, tagged

pytestmark = pytest.mark.slow

REFRESH = "sk-ant-ort01-run-command-refresh"
ONBOARD = f"""
from accounts_pool.models import Pool, Team
from accounts_pool.services.onboarding import account_create_oauth
team = Team.objects.create(name="Demo", slug="demo")
pool = Pool.objects.create(team=team, name="Demo", slug="demo")
account_create_oauth(pool=pool, label="due now", refresh_token="{REFRESH}", actor="test")
"""
READ = """
from accounts_pool.models import Account
a = Account.objects.get()
print(a.credential_version, a.access_token)
"""


def _status(url: str) -> int:
    return _fetch(url)[0]


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def test_the_run_command_serves_refreshes_revives_a_dead_worker_and_stops_on_ctrl_c(tmp_path):
    """One run of scripts/run, as a newcomer uses it: the web app serves, beat's cycle refreshes
    a due account, a worker that dies (as one can when the broker goes away) is restarted, and
    Ctrl-C (SIGINT to the terminal's process group) leaves no process of the run behind; it
    once left three."""
    tag = secrets.token_hex(6)
    port = processes.free_port()
    with fake_anthropic({REFRESH}) as fake:
        env = dict(os.environ)
        env.update(
            fake.env(),
            DJANGO_SETTINGS_MODULE="config.settings",
            ACCOUNTS_POOL_VAR_DIR=str(tmp_path / "var"),
            # The embedded defaults, spelled out so a developer's .env cannot redirect them.
            DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'db.sqlite3'}",
            CELERY_BROKER_URL="filesystem://",
            SECRET_KEY="run-command-test",
            ACCOUNTS_POOL_ENCRYPTION_KEYS=os.environ["ACCOUNTS_POOL_ENCRYPTION_KEYS"],
            # What the .env scripts/run used to write: it runs with DEBUG off all the same.
            DEBUG="true",
            PORT=str(port),
            RELAY_PORT=str(processes.free_port()),  # not PORT + 1: another test may hold that one
            ACCOUNTS_POOL_BEAT_SECONDS=processes.BEAT_SECONDS,
            SUPERVISE_TEST_TAG=tag,
        )
        log = tmp_path / "run.log"
        run = processes.start([str(processes.ROOT / "scripts" / "run")], env, log)
        try:
            processes.wait_for(
                lambda: _status(f"http://127.0.0.1:{port}/admin/login/") == 200, 180, "web", log
            )
            # DEBUG is off: no debug page (it echoes a request's data), static files still served.
            missing, page = _fetch(f"http://127.0.0.1:{port}/no-such-page/")
            assert missing == 404
            assert "URLconf" not in page
            assert _status(f"http://127.0.0.1:{port}/static/accounts_pool/app.css") == 200
            assert _status(f"http://127.0.0.1:{port}/static/admin/css/base.css") == 200
            manage = [str(processes.VENV_BIN / "python"), "manage.py", "shell", "-c"]
            subprocess.run([*manage, ONBOARD], cwd=processes.ROOT, env=env, check=True)
            # Beat sends a dispatch every BEAT_SECONDS (a minute unless told); the worker refreshes.
            processes.wait_for(lambda: fake.calls["token"] >= 1, 60, "beat and worker", log)
            read = subprocess.run(
                [*manage, READ], cwd=processes.ROOT, env=env, check=True, capture_output=True
            )
            worker = pid_of(log, "worker")
            assert worker is not None
            os.kill(worker, signal.SIGKILL)
            processes.wait_for(lambda: pid_of(log, "worker") != worker, 30, "a new worker", log)
            processes.wait_for(lambda: log.read_text().count("ready.") >= 2, 60, "it ready", log)
            os.killpg(run.pid, signal.SIGINT)
            run.wait(timeout=60)
        finally:
            processes.stop(run, timeout=30)
            left = tagged(tag)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
    version, access = read.stdout.decode().split()[-2:]
    assert (int(version), access) == (2, "sk-ant-oat01-fake-access-1")
    assert fake.calls["token"] == 1
    assert (tmp_path / "var" / "db.sqlite3").exists()
    assert "beat: Starting" in log.read_text()
    assert left == []
    assert "worker exited with -9" in log.read_text()
    assert run.returncode == 0
