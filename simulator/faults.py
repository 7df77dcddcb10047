"""Faults the simulated provider can serve instead of (or around) a normal answer.

A `Fault` is a small immutable value made by one of its factories; `SimulatedAnthropic.inject`
decides where and how often it applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from simulator.oauth import POLICY_MESSAGE

FaultKind = Literal[
    "status",
    "timeout",
    "reset",
    "html",
    "malformed_json",
    "slow_body",
    "delay",
    "stream_error",
    "stream_cut",
]
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

# What the Messages API says with each error (403: the organisation policy).
_API_MESSAGES = {
    400: "Invalid request.",
    401: "OAuth token has expired. Please obtain a new token or refresh your existing token.",
    403: POLICY_MESSAGE,
    404: "Not found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed your account's rate limit. Please try again later.",
    500: "Internal server error",
    529: "Overloaded",
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
    (when there is one); `seconds` is the hold, drip or delay time; `after_events` is where a
    cut stream stops.
    """

    kind: FaultKind
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    seconds: float = 0.0
    after_events: int = 0

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

    @classmethod
    def api_error(
        cls, code: int, message: str | None = None, *, retry_after: float | None = None
    ) -> Fault:
        """A Messages API error in Anthropic's shape with the type of `code` (429
        rate_limit_error, 401 authentication_error, 403 permission_error with the organisation
        policy message, 529 overloaded_error, 500 api_error, ...), and `retry-after` when given,
        e.g. `Fault.api_error(429, retry_after=30)`."""
        error_type = _ERROR_TYPES.get(code, "api_error")
        text = message if message is not None else _API_MESSAGES.get(code, f"Simulated {code}")
        body = {"type": "error", "error": {"type": error_type, "message": text}}
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return cls.status(code, body, headers=headers)

    @classmethod
    def stream_error(
        cls, error_type: str = "rate_limit_error", message: str | None = None
    ) -> Fault:
        """A 200 `text/event-stream` answer whose first event is `event: error` with
        `{"type": "error", "error": {"type": error_type, "message"}}`, then the end of the stream
        (for any request on the Messages endpoint, streamed or not)."""
        code = next((c for c, t in _ERROR_TYPES.items() if t == error_type), 500)
        text = message if message is not None else _API_MESSAGES.get(code, "Simulated error")
        body = {"type": "error", "error": {"type": error_type, "message": text}}
        return cls(kind="stream_error", body=json.dumps(body).encode(), content_type="")

    @classmethod
    def stream_cut(cls, after_events: int) -> Fault:
        """Answer normally but close the connection after `after_events` server-sent events,
        without ending the body (a JSON answer is cut after half its bytes)."""
        return cls(kind="stream_cut", after_events=max(0, int(after_events)))

    @property
    def answers_normally(self) -> bool:
        """True when the normal answer is still produced (delay, slow_body, stream_cut)."""
        return self.kind in ("delay", "slow_body", "stream_cut")
