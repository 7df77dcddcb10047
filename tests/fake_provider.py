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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
            "ANTHROPIC_TOKEN_URL": f"{self.base}/v1/oauth/token",
            "ANTHROPIC_USAGE_URL": f"{self.base}/api/oauth/usage",
            "ANTHROPIC_PROFILE_URL": f"{self.base}/api/oauth/profile",
        }

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
        return 200, {
            "five_hour": {"utilization": 12.0, "resets_at": "2026-11-29T16:00:00+00:00"},
            "seven_day": {"utilization": 30.0, "resets_at": "2026-12-03T08:00:00+00:00"},
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
                self._answer(*fake.refresh(body))

            def do_GET(self) -> None:
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
