"""A small local Anthropic token and usage server for tests that run real processes (a Celery
worker, the run script), where respx cannot reach. Refresh tokens rotate and are single-use,
like the real ones: a reused one answers 400 invalid_grant."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeAnthropic:
    def __init__(self, valid_refresh_tokens: set[str]) -> None:
        self.valid = set(valid_refresh_tokens)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._serial = itertools.count(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        return {
            "ANTHROPIC_AUTHORIZE_URL": f"{self.base}/oauth/authorize",
            "ANTHROPIC_TOKEN_URL": f"{self.base}/v1/oauth/token",
            "ANTHROPIC_USAGE_URL": f"{self.base}/api/oauth/usage",
            "ANTHROPIC_PROFILE_URL": f"{self.base}/api/oauth/profile",
        }

    def exchange(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A login code (shown by the authorize page) for fresh tokens of a new account."""
        with self.lock:
            self.calls["exchange"] += 1
            if not str(body.get("code", "")).startswith("fake-code-") or not body.get(
                "code_verifier"
            ):
                return 400, {"error": "invalid_grant", "error_description": "bad code"}
            serial = next(self._serial)
            new_refresh = f"sk-ant-ort01-fake-login-{serial}"
            self.valid.add(new_refresh)
        return 200, {
            "access_token": f"sk-ant-oat01-fake-login-{serial}",
            "refresh_token": new_refresh,
            "expires_in": 28800,
            "account": {"uuid": f"fake-account-{serial}", "email_address": f"u{serial}@fake.test"},
            "organization": {"uuid": "fake-org", "name": "Fake Org"},
        }

    def authorize_page(self, query: dict[str, list[str]]) -> str:
        """Stands in for claude.ai's login: shows the code to paste back, CODE#STATE."""
        state = (query.get("state") or [""])[0]
        with self.lock:
            code = f"fake-code-{next(self._serial)}"
        return f"<html><body><p>Paste this code:</p><code id='code'>{code}#{state}</code></body>"

    def refresh(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls["token"] += 1
            token = body.get("refresh_token")
            if token not in self.valid:
                return 400, {"error": "invalid_grant", "error_description": "unknown or used"}
            self.valid.discard(token)
            serial = next(self._serial)
            new_refresh = f"sk-ant-ort01-fake-rotated-{serial}"
            self.valid.add(new_refresh)
        return 200, {
            "access_token": f"sk-ant-oat01-fake-access-{serial}",
            "refresh_token": new_refresh,
            "expires_in": 28800,
        }

    def usage(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls["usage"] += 1
        now = datetime.now(UTC).replace(microsecond=0)
        return 200, {
            "five_hour": {"utilization": 12.0, "resets_at": (now + timedelta(hours=4)).isoformat()},
            "seven_day": {"utilization": 30.0, "resets_at": (now + timedelta(days=4)).isoformat()},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if body.get("grant_type") == "authorization_code":
                    self._answer(*fake.exchange(body))
                else:
                    self._answer(*fake.refresh(body))

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/oauth/authorize":
                    page = fake.authorize_page(parse_qs(parts.query)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                self._answer(*fake.usage())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def fake_anthropic(valid_refresh_tokens: set[str]) -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic(valid_refresh_tokens)
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
