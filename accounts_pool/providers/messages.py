"""The Messages API upstream of the relay (DESIGN.md 4.4): the one async HTTP client.

One shared `httpx.AsyncClient` per event loop keeps a connection pool to ANTHROPIC_API_URL (the
relay process has one loop; `runserver` runs each async view in a loop of its own). Requests
carry the account's OAuth token and the OAuth beta; answers are streamed, never buffered.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from .cookies import no_cookies

OAUTH_BETA = "oauth-2025-04-20"
# Connect 10 s; then up to 10 minutes between two chunks of a long answer.
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)
# What a first event must fit in to be looked at before the tool sees a byte (a stream whose
# first event is a rate_limit_error fails over like a 429).
FIRST_EVENT_LIMIT = 64 * 1024

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The tool's credential and what the client library sets itself are never passed on.
# Nor is accept-encoding: the answer is relayed as bytes, and its first event must be readable.
NOT_FORWARDED = HOP_BY_HOP | {
    "authorization",
    "x-api-key",
    "host",
    "content-length",
    "cookie",
    "accept-encoding",
}
# httpx decodes nothing (raw bytes are relayed), so the answer keeps its own encoding headers.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "set-cookie"}


Answer = httpx.Response  # an upstream answer, its body still to be streamed


class UpstreamUnreachable(Exception):
    """No answer from the Messages API (connect error, reset, timeout before the headers)."""


def forwarded_headers(tool: Mapping[str, str], access_token: str) -> list[tuple[str, str]]:
    """The tool's headers less its credentials and hop-by-hop ones, with the account's token
    and the OAuth beta added to the tool's betas."""
    headers = [(k, v) for k, v in tool.items() if k.lower() not in NOT_FORWARDED]
    betas = [
        beta.strip()
        for k, v in headers
        if k.lower() == "anthropic-beta"
        for beta in v.split(",")
        if beta.strip()
    ]
    headers = [(k, v) for k, v in headers if k.lower() != "anthropic-beta"]
    if OAUTH_BETA not in betas:
        betas.append(OAUTH_BETA)
    headers.append(("anthropic-beta", ",".join(betas)))
    headers.append(("authorization", f"Bearer {access_token}"))
    return headers


def returned_headers(upstream: httpx.Headers) -> list[tuple[str, str]]:
    """The answer's headers for the tool, byte for byte: decoded as latin-1, which maps every
    byte to one character and back (httpx's own decoding may read UTF-8, which a front end
    could not encode again)."""
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in upstream.raw
        if k.decode("latin-1").lower() not in NOT_RETURNED
    ]


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        client = _clients[loop] = httpx.AsyncClient(
            timeout=TIMEOUT, limits=limits, cookies=no_cookies()
        )
    return client


async def open_answer(
    *, path: str, query: str, headers: list[tuple[str, str]], body: bytes
) -> httpx.Response:
    """Send one request upstream and return as soon as the headers are in; the body is read
    by streaming it (`aiter_raw`) and the caller closes the response."""
    url = settings.ANTHROPIC_API_URL.rstrip("/") + path + (f"?{query}" if query else "")
    client = _client()
    # The front ends read header bytes as latin-1; they go on as the same bytes (httpx would
    # refuse a str value outside ASCII).
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    request = client.build_request("POST", url, headers=raw, content=body)
    try:
        return await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise UpstreamUnreachable(type(exc).__name__) from None


@dataclass(frozen=True)
class Peeked:
    """The start of an answer, read before deciding whether the tool gets it."""

    head: bytes  # bytes already read (to send first if the answer passes through)
    error_type: str  # the error's type: of a JSON error body, or a stream's first event
    message: str


def _error_of(document: Any) -> tuple[str, str]:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        kind, message = error.get("type"), error.get("message")
        return (kind if isinstance(kind, str) else ""), (
            message if isinstance(message, str) else ""
        )
    return "", ""


def first_event(buffer: bytes) -> tuple[str, Any] | None:
    """The first complete server-sent event in `buffer` as (event type, parsed data), or None
    while it is incomplete. `ping` events are skipped; unreadable data is (type, None)."""
    text = buffer.replace(b"\r\n", b"\n")
    while b"\n\n" in text:
        block, text = text.split(b"\n\n", 1)
        kind, data = "", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not kind and not data:
            continue
        try:
            parsed = json.loads("\n".join(data)) if data else None
        except (ValueError, RecursionError):  # not JSON, or nested past the stack
            parsed = None
        kind = kind or (parsed.get("type", "") if isinstance(parsed, dict) else "")
        if kind == "ping":
            continue
        return kind, parsed
    return None


async def peek(answer: httpx.Response, chunks: AsyncIterator[bytes]) -> Peeked:
    """Read what decides failover: an error answer's body (small), or a 200 stream's first
    event (within FIRST_EVENT_LIMIT). A 200 JSON answer is not read ahead."""
    content_type = answer.headers.get("content-type", "")
    head = b""
    if answer.status_code >= 400:
        async for chunk in chunks:
            head += chunk
            if len(head) > FIRST_EVENT_LIMIT:
                break
        try:
            document = json.loads(head)
        except (ValueError, RecursionError):  # not JSON, or nested past the stack
            return Peeked(head, "", "")
        return Peeked(head, *_error_of(document))
    if answer.status_code == 200 and content_type.startswith("text/event-stream"):
        async for chunk in chunks:
            head += chunk
            found = first_event(head)
            if found is not None:
                kind, data = found
                if kind == "error":
                    return Peeked(head, *_error_of(data))
                return Peeked(head, "", "")
            if len(head) > FIRST_EVENT_LIMIT:
                break
    return Peeked(head, "", "")
