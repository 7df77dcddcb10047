"""Answers of the simulated provider, as plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """Status, body and headers of one answer (Content-Length is added when sending)."""

    code: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(code: int, payload: Any) -> Reply:
    """A JSON answer."""
    return Reply(code, json.dumps(payload).encode())


def error_reply(code: int, error_type: str, message: str) -> Reply:
    """An API error in Anthropic's shape: {"type": "error", "error": {"type", "message"}}."""
    return json_reply(code, {"type": "error", "error": {"type": error_type, "message": message}})


def oauth_error(error: str, description: str, code: int = 400) -> Reply:
    """An OAuth error in the token endpoint's shape: {"error", "error_description"}."""
    return json_reply(code, {"error": error, "error_description": description})


@dataclass(frozen=True)
class StreamReply:
    """A 200 `text/event-stream` answer: encoded events, each sent after its delay (seconds)."""

    events: tuple[bytes, ...]
    delays: tuple[float, ...]
    headers: tuple[tuple[str, str], ...] = ()
