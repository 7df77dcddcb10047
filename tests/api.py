"""A small JSON client for API tests that also keeps every response body it saw."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

BASE = "/api/v1"


class Api:
    def __init__(self, secret: str | None = None, *, seen: list[str] | None = None) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
        self.seen = seen if seen is not None else []

    def _keep(self, response: Any) -> Any:
        self.seen.append(response.content.decode())
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._keep(self.client.get(BASE + path, params, **self.headers))

    def _send(self, method: str, path: str, body: Any, raw: str | None) -> Any:
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        call = getattr(self.client, method)
        return self._keep(call(BASE + path, data, content_type="application/json", **self.headers))

    def post(self, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        return self._send("post", path, body, raw)

    def patch(self, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        return self._send("patch", path, body, raw)

    def delete(self, path: str) -> Any:
        return self._keep(self.client.delete(BASE + path, **self.headers))


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])
