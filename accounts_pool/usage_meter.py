"""Token counts read from a relayed answer as its bytes pass by (DESIGN.md 4.4): the `usage` of
a JSON answer, or a stream's `message_start` and `message_delta` events. Pure: no Django, no
I/O; the relay feeds each chunk and forwards it untouched. Nothing but the counts is kept."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
# A JSON answer is held (as bytes, to read its usage at the end) up to this size; past it the
# request is counted without tokens. Messages answers are far smaller (max_tokens bounds them).
JSON_LIMIT = 8 * 1024 * 1024
# An event bigger than this is not one that carries usage (those are small); it is skipped.
EVENT_LIMIT = 1024 * 1024
USAGE_EVENTS = (b"message_start", b"message_delta")


@dataclass(frozen=True)
class Tokens:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


def tokens_of(usage: Any, base: Tokens | None = None) -> Tokens:
    """A `usage` object as Tokens: fields it carries replace `base`'s (a stream's
    message_delta counts are cumulative), others keep them. Non-integers count as absent."""
    counts = dict(vars(base)) if base is not None else dict.fromkeys(TOKEN_FIELDS, 0)
    if isinstance(usage, dict):
        for name in TOKEN_FIELDS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                counts[name] = value
    return Tokens(**counts)


class UsageMeter:
    """Feed it an answer's chunks in order; `tokens` is what the answer said it used."""

    def __init__(self, content_type: str) -> None:
        self.stream = content_type.startswith("text/event-stream")
        self.tokens = Tokens()
        self._buffer = bytearray()
        self._overflow = False

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if self.stream:
            self._events()
        elif len(self._buffer) > JSON_LIMIT:
            self._overflow = True
            self._buffer = bytearray()

    def finish(self) -> Tokens:
        """The counts once the answer has ended (or the tool hung up: what was seen)."""
        if not self.stream and not self._overflow and self._buffer:
            try:
                document = json.loads(self._buffer)
            except (ValueError, RecursionError):
                document = None
            if isinstance(document, dict):
                self.tokens = tokens_of(document.get("usage"))
        elif self.stream:
            self._buffer += b"\n\n"  # a last event the stream did not close
            self._events()
        self._buffer = bytearray()
        return self.tokens

    def _events(self) -> None:
        buffer = self._buffer
        if b"\r" in buffer:
            buffer = bytearray(buffer.replace(b"\r\n", b"\n"))
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            block = bytes(buffer[start:end])
            start = end + 2
            if any(name in block for name in USAGE_EVENTS):
                self._event(block)
        rest = buffer[start:]
        # A partial event too big to be a usage event is dropped as it grows.
        self._buffer = rest if len(rest) <= EVENT_LIMIT else bytearray()

    def _event(self, block: bytes) -> None:
        data = b"".join(
            line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")
        )
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):
            return
        if not isinstance(parsed, dict):
            return
        if parsed.get("type") == "message_start" and isinstance(parsed.get("message"), dict):
            self.tokens = tokens_of(parsed["message"].get("usage"))
        elif parsed.get("type") == "message_delta":
            self.tokens = tokens_of(parsed.get("usage"), self.tokens)
