"""Access logs carry no secrets and are JSON under LOG_FORMAT=json.

gunicorn's access log printed invite tokens in full (`GET /invite/<token>/`), and was plain
text under LOG_FORMAT=json; Django's own "Not Found: /invite/<token>/" line did the same.
Here the Procfile's web (gunicorn) and relay (uvicorn) commands run for real."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from functools import partial

import pytest

from accounts_pool.logs import JsonFormatter, MaskSecrets, mask_url_secrets

from . import processes

INVITE = "inv-SECRET-invite-token-0123456789abcdef"
CODE = "SECRETCODE42"
STATE = "SECRETSTATE42"
REFERER_TOKEN = "SECRETREFERER42"
SECRETS = (INVITE, CODE, STATE, REFERER_TOKEN)


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        (f"GET /invite/{INVITE}/ HTTP/1.1", "GET /invite/[redacted]/ HTTP/1.1"),
        (f"Not Found: /invite/{INVITE}", "Not Found: /invite/[redacted]"),
        (
            f"/pools/p/login/?code={CODE}&state={STATE}&page=2",
            "/pools/p/login/?code=[redacted]&state=[redacted]&page=2",
        ),
        (f"https://x.test/cb?Token={CODE}#frag", "https://x.test/cb?Token=[redacted]#frag"),
        ("GET /pools/claude/?page=2 HTTP/1.1", "GET /pools/claude/?page=2 HTTP/1.1"),
        ("GET /livez HTTP/1.1", "GET /livez HTTP/1.1"),
        (
            f"GET /login/?next=/pools/p/login/%3Fcode%3D{CODE}%26state%3D{STATE}%26page%3D2 HTTP",
            "GET /login/?next=/pools/p/login/%3Fcode%3D[redacted]"
            "%26state%3D[redacted]%26page%3D2 HTTP",
        ),
        (
            f"GET /login/?next=%2Finvite%2F{INVITE}%2F HTTP/1.1",
            "GET /login/?next=%2Finvite%2F[redacted]%2F HTTP/1.1",
        ),
    ],
)
def test_url_secrets_are_masked_and_nothing_else(line, masked) -> None:
    assert mask_url_secrets(line) == masked


def test_every_django_log_line_is_masked(caplog) -> None:
    record = logging.LogRecord(
        "django.request", logging.WARNING, "", 0, "Not Found: %s", (f"/invite/{INVITE}/",), None
    )
    MaskSecrets().filter(record)
    assert INVITE not in record.getMessage()
    assert INVITE not in JsonFormatter().format(
        logging.LogRecord("x", logging.INFO, "", 0, "%s", (f"/invite/{INVITE}/",), None)
    )


def _procfile() -> dict[str, str]:
    lines = (processes.ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def _get(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _get_ok(url: str) -> bool:
    return _get(url) == 200


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_servers_logs_have_no_url_secrets(tmp_path, log_format) -> None:
    web_port, relay_port = processes.free_port(), processes.free_port()
    env = processes.child_env(
        PORT=str(web_port),
        RELAY_PORT=str(relay_port),
        WEB_CONCURRENCY="1",
        RELAY_CONCURRENCY="1",
        LOG_FORMAT=log_format,
        DEBUG="false",
        PATH=f"{processes.VENV_BIN}:{os.environ['PATH']}",
    )
    procfile = _procfile()
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "relay")}
    started = {
        name: processes.start(["bash", "-c", f"exec {procfile[name]}"], env, logs[name])
        for name in logs
    }
    try:
        for name, port in (("web", web_port), ("relay", relay_port)):
            livez = f"http://127.0.0.1:{port}/livez"
            processes.wait_for(partial(_get_ok, livez), 60, name, logs[name])
        web = f"http://127.0.0.1:{web_port}"
        referer = f"{web}/invite/{REFERER_TOKEN}/"
        assert _get(f"{web}/invite/{INVITE}/", Referer=referer) in (200, 404, 410)
        assert _get(f"{web}/pools/p/login/?code={CODE}&state={STATE}") == 200  # the login page
        assert _get(f"http://127.0.0.1:{relay_port}/relay/anthropic/v1/invite/{INVITE}/") == 404
    finally:
        for process in started.values():
            processes.stop(process)
    web_log = logs["web"].read_text()
    text = web_log + logs["relay"].read_text()
    assert not [secret for secret in SECRETS if secret in text], text
    access = [line for line in web_log.splitlines() if "/invite/" in line and "GET" in line]
    assert access, web_log
    assert "/invite/[redacted]/" in access[0]
    # The relay's access log stays off, as the Procfile asks (--no-access-log).
    assert "uvicorn.access" not in logs["relay"].read_text()
    if log_format == "json":
        for name, log in logs.items():
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            assert lines, name
            for line in lines:
                entry = json.loads(line)  # every line, gunicorn's and uvicorn's own included
                assert {"ts", "level", "logger", "message"} <= set(entry), line
        entries = [json.loads(line) for line in access]
        entry = next(e for e in entries if e["logger"] == "gunicorn.access")
        assert entry["path"] == "/invite/[redacted]/"
        login = next(
            e for e in map(json.loads, web_log.splitlines()) if "code=" in e.get("path", "")
        )
        assert login["path"] == "/pools/p/login/?code=[redacted]&state=[redacted]"
        assert entry["method"] == "GET"
        assert entry["referer"] == f"{web}/invite/[redacted]/"
        assert isinstance(entry["status"], int)
        assert entry["duration_ms"] >= 0
