"""The newcomers' demo: one command, the simulated provider, and every reason code of
DESIGN.md 3.3 on the demo pool, each reached by the real flows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from accounts_pool.state import ReasonCode

from . import processes


def _codes(url: str, token: str) -> set[str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            pool = json.loads(response.read())
    except OSError:
        return set()
    return {reason["code"] for account in pool["accounts"] for reason in account["reasons"]}


@pytest.mark.slow
def test_the_demo_shows_every_reason_code(tmp_path):
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env.update(
        PORT=str(port),
        RELAY_PORT=str(processes.free_port()),  # not PORT + 1: another test may hold that one
        ACCOUNTS_POOL_DEMO_DIR=str(tmp_path / "demo"),
    )
    env.pop("ACCOUNTS_POOL_ENCRYPTION_KEYS", None)  # the demo makes its own
    log = tmp_path / "demo.log"
    demo = processes.start([str(processes.ROOT / "scripts" / "demo")], env, log)
    try:
        printed = processes.wait_for(
            lambda: re.search(r"API token \(lead\): (\S+)", log.read_text()), 180, "the demo", log
        )
        token = printed.group(1)  # type: ignore[attr-defined]
        assert re.search(r"team lead: demo-lead / \S+", log.read_text())
        tried = re.search(r"refresh token (sk-ant-ort01-\S+), or upload (\S+);", log.read_text())
        assert tried is not None  # tokens to try Paste tokens and the file import with
        assert json.loads(Path(tried.group(2)).read_text())["claudeAiOauth"]["refreshToken"]
        # Traffic went through the relay process, one request failing over after a 429.
        assert (
            "POST /v1/messages: 200; POST /v1/messages (stream): 200; "
            "POST /v1/messages/count_tokens: 200" in log.read_text()
        )
        url = f"http://127.0.0.1:{port}/api/v1/pools/demo"
        seen = processes.wait_for(lambda: _codes(url, token), 60, "the web app", log)
        # Every code at once, as the demo says: none waits for the cycle.
        assert seen == {code.value for code in ReasonCode}
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            forecast = json.loads(response.read())["forecast"]
        # The demo's simulated hour of traffic: the pool page says when it runs dry.
        assert forecast["basis"] in ("pace", "dry_now"), forecast
        assert forecast["runs_dry_at"] is not None
    finally:
        processes.stop(demo, timeout=40)


def test_the_demo_never_replaces_a_folder_that_is_not_its_own(tmp_path):
    precious = tmp_path / "var"
    precious.mkdir()
    (precious / "db.sqlite3").write_text("production data")
    env = {**os.environ, "ACCOUNTS_POOL_DEMO_DIR": str(precious)}
    done = subprocess.run(
        [str(processes.ROOT / "scripts" / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "is not a demo folder" in done.stderr
    assert (precious / "db.sqlite3").read_text() == "production data"
