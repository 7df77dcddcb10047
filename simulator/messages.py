"""The Messages API of the simulated provider as plain values: answers, events, usage, headers.

Everything here is deterministic in the request and the account, so a test can predict the
exact text (it names the account), the token counts and the rate-limit headers.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simulator.accounts import SimAccount

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
OAUTH_BETA = "oauth-2025-04-20"
SSE = "text/event-stream; charset=utf-8"
# At or above this utilization (percent) of any window the status is "allowed_warning".
WARNING_PERCENT = 80.0
RATE_LIMIT_MESSAGE = "This request would exceed your account's rate limit. Please try again later."


@dataclass
class MessagesRequest:
    """One request the simulator got on /v1/messages or /v1/messages/count_tokens.

    `account` is the owner of the bearer token (None for a token never issued); `status` the
    answer's status (0 while undecided or for a reset); `finished` turns true once the handler is
    done, and `disconnected` when the client hung up before the answer was complete."""

    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    body_sha256: str
    account: SimAccount | None
    stream: bool
    status: int = 0
    events_sent: int = 0
    finished: bool = False
    disconnected: bool = False
    started_at: float = field(default=0.0)
    finished_at: float = field(default=0.0)  # when the handler was done (time.time())

    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def betas(header: str) -> list[str]:
    """The betas of an `anthropic-beta` header (comma-separated)."""
    return [beta.strip() for beta in header.split(",") if beta.strip()]


def parse_body(raw: bytes) -> dict[str, Any] | None:
    """The request body as a JSON object, or None."""
    try:
        document = json.loads(raw or b"null")
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def invalid_request(body: dict[str, Any] | None, *, count_only: bool) -> str | None:
    """Why the API would answer 400 invalid_request_error, or None for a valid request."""
    if body is None:
        return "The request body is not valid JSON."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    if count_only:
        return None
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required"
    return None


def input_tokens(body: dict[str, Any]) -> int:
    """The input tokens of a request: UTF-8 bytes of its compact `messages` JSON // 4 (min 1)."""
    compact = json.dumps(body.get("messages"), separators=(",", ":"), ensure_ascii=False)
    return max(1, len(compact.encode()) // 4)


def reply_text(account: SimAccount) -> str:
    """The assistant's text: it names the account, so a test can tell which one served."""
    return f"Hello from {account.email}. This answer comes from the simulated Anthropic API."


def output_tokens(text: str) -> int:
    """The output tokens of an answer: its words."""
    return len(text.split())


def usage(body: dict[str, Any], text: str) -> dict[str, int]:
    """The `usage` object of an answer."""
    return {
        "input_tokens": input_tokens(body),
        "output_tokens": output_tokens(text),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message_id() -> str:
    return "msg_sim_" + secrets.token_hex(12)


def message(body: dict[str, Any], account: SimAccount, message_id: str) -> dict[str, Any]:
    """The JSON answer of a non-streaming request."""
    text = reply_text(account)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage(body, text),
    }


def split_text(text: str, chunks: int) -> list[str]:
    """`text` in `chunks` consecutive pieces (fewer when the text is shorter than that)."""
    pieces = max(1, min(chunks, len(text)))
    bounds = [len(text) * i // pieces for i in range(pieces + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(pieces)]


def stream_events(
    body: dict[str, Any], account: SimAccount, message_id: str, chunks: int
) -> list[tuple[str, dict[str, Any]]]:
    """The events of a streamed answer, in the real order, with `chunks` text deltas."""
    text = reply_text(account)
    start_usage = usage(body, text) | {"output_tokens": 1}
    started = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    deltas = [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in split_text(text, chunks)
    ]
    return [
        ("message_start", {"type": "message_start", "message": started}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        *deltas,
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens(text)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def error_document(error_type: str, message: str) -> dict[str, Any]:
    """Anthropic's error shape, for a JSON body or an `error` event."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def encode_event(kind: str, data: dict[str, Any]) -> bytes:
    """One server-sent event: `event: <type>\\ndata: <json>\\n\\n`."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _window(usage_body: dict[str, Any], key: str) -> tuple[float, float | None] | None:
    window = usage_body.get(key)
    if not isinstance(window, dict):
        return None
    utilization = window.get("utilization")
    if not isinstance(utilization, int | float) or isinstance(utilization, bool):
        return None
    resets_at = window.get("resets_at")
    reset: float | None = None
    if isinstance(resets_at, str):
        try:
            reset = datetime.fromisoformat(resets_at).timestamp()
        except ValueError:
            reset = None
    return float(utilization), reset


def ratelimit_headers(account: SimAccount) -> tuple[tuple[str, str], ...]:
    """The `anthropic-ratelimit-unified-*` headers of an answer for `account`, read from the same
    usage body its usage endpoint answers with (percent there, fractions here)."""
    usage_body = account.usage
    headers: list[tuple[str, str]] = []
    highest = 0.0
    for short, key in (("5h", "five_hour"), ("7d", "seven_day")):
        window = _window(usage_body, key)
        if window is None:
            continue
        percent, reset = window
        highest = max(highest, percent)
        headers.append((f"anthropic-ratelimit-unified-{short}-utilization", f"{percent / 100:g}"))
        if reset is not None:
            headers.append((f"anthropic-ratelimit-unified-{short}-reset", str(int(reset))))
    status = account.ratelimit_status
    if status is None:
        if highest >= 100:
            status = "rejected"
        elif highest >= WARNING_PERCENT:
            status = "allowed_warning"
        else:
            status = "allowed"
    headers.append(("anthropic-ratelimit-unified-status", status))
    return tuple(headers)
