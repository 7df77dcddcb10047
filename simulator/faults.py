"""Faults the simulated provider can serve instead of (or around) a normal answer.

A `Fault` is a small immutable value made by one of its factories; `SimulatedAnthropic.inject`
decides where and how often it applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["status", "timeout", "reset", "html", "malformed_json", "slow_body", "delay"]
FaultBody = Mapping[str, Any] | list[Any] | str | bytes | None

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

_EDGE_PAGE = (
    "<!DOCTYPE html><html><head><title>{title}</title></head><body>"
    "<center><h1>{title}</h1></center><hr><center>cloudflare</center></body></html>"
)


def _edge_title(code: int) -> str:
    titles = {
        200: "Just a moment...",
        403: "403 Forbidden",
        429: "429 Too Many Requests",
        500: "500 Internal Server Error",
        502: "502 Bad Gateway",
        503: "503 Service Temporarily Unavailable",
        504: "504 Gateway Time-out",
    }
    return titles.get(code, f"{code} Error")


def edge_page(code: int) -> bytes:
    """An HTML page like the ones an edge proxy answers with."""
    return _EDGE_PAGE.format(title=_edge_title(code)).encode()


def _encode_body(code: int, body: FaultBody, content_type: str) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if body is not None:
        return json.dumps(body).encode()
    if "json" in content_type:
        error_type = _ERROR_TYPES.get(code, "api_error")
        payload = {"type": "error", "error": {"type": error_type, "message": f"Simulated {code}"}}
        return json.dumps(payload).encode()
    if "html" in content_type:
        return edge_page(code)
    return f"Simulated {code}".encode()


@dataclass(frozen=True)
class Fault:
    """One misbehaviour of the provider. Build it with a factory, e.g. `Fault.status(503)`.

    `kind` says what happens; `code`, `body`, `headers` and `content_type` describe the answer
    (when there is one); `seconds` is the hold, drip or delay time.
    """

    kind: FaultKind
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    seconds: float = 0.0

    @classmethod
    def status(
        cls,
        code: int,
        body: FaultBody = None,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Fault:
        """Answer `code` with `body` (a dict/list is sent as JSON, str/bytes as is; None gives an
        Anthropic-style error JSON, or an edge-proxy page for an HTML content type) and extra
        `headers`, e.g. `Fault.status(429, headers={"Retry-After": "30"})`."""
        return cls(
            kind="status",
            code=code,
            body=_encode_body(code, body, content_type),
            headers=tuple((headers or {}).items()),
            content_type=content_type,
        )

    @classmethod
    def timeout(cls, seconds: float) -> Fault:
        """Hold the request `seconds`, then answer 504 (HTML) and close the connection; a client
        with a shorter timeout gives up first. Stopping the simulator ends the hold early."""
        return cls(
            kind="timeout",
            code=504,
            body=edge_page(504),
            content_type="text/html; charset=utf-8",
            seconds=float(seconds),
        )

    @classmethod
    def reset(cls) -> Fault:
        """Close the connection without any response (TCP reset after reading the request)."""
        return cls(kind="reset", code=0)

    @classmethod
    def html(cls, code: int = 200) -> Fault:
        """An edge proxy's HTML page with status `code`."""
        return cls(
            kind="html", code=code, body=edge_page(code), content_type="text/html; charset=utf-8"
        )

    @classmethod
    def malformed_json(cls, code: int = 200) -> Fault:
        """The body `{not json` labelled `application/json`, with status `code`."""
        return cls(kind="malformed_json", code=code, body=b"{not json")

    @classmethod
    def slow_body(cls, seconds: float) -> Fault:
        """Handle the request normally, send status and headers at once, then drip the body
        over `seconds` (each pause is a fraction of it, so a per-read timeout longer than that
        fraction does not trip)."""
        return cls(kind="slow_body", seconds=float(seconds))

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait `seconds` (on top of the global latency), then handle the request normally."""
        return cls(kind="delay", seconds=float(seconds))

    @property
    def answers_normally(self) -> bool:
        """True when the normal answer is still produced (delay, slow_body)."""
        return self.kind in ("delay", "slow_body")
