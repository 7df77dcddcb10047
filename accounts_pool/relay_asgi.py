"""The relay process's front end (config/asgi.py routes /relay/ here): a plain ASGI app around
relay_exchange, the same exchange the URLconf's view serves.

Django's ASGI handler costs a relayed request more than the relay's own work: it builds an
HttpRequest, sends the request_started and request_finished signals (whose receivers hop to the
one thread for sync code), and starts a thread per request for that context (bench/relay.py).
The relay needs none of it: a tool is authenticated by its consumer key, never by a session, and
its database work already runs on worker threads with connections of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from django.conf import settings

from . import relay_exchange

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name; repeated ones joined with commas (as Django
    does), so that two `anthropic-beta` headers keep all their betas."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def read_body(receive: Receive) -> bytes | None:
    """The body, kept up to the relay's cap + 1 byte (the exchange answers 413 beyond it), or
    None when the tool went away (or config.asgi's body limit cut it off) before its end."""
    room = settings.RELAY_MAX_BODY_BYTES + 1
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if room > 0 and chunk:
            parts.append(chunk[:room])
            room -= len(parts[-1])
        if not message.get("more_body", False):
            return b"".join(parts)


async def _gone(receive: Receive) -> None:
    """Returns once the tool has disconnected (or the server says the exchange is over)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(asked: relay_exchange.Asked) -> relay_exchange.Answer:
    """The exchange's answer; an error of ours is a 500 in the Messages API's shape (which a
    tool prints), not the server's plain-text page. Logged with its traceback, which holds
    code, not values."""
    try:
        return await relay_exchange.exchange(asked)
    except Exception:
        logger.exception("relay: the exchange failed")
        return relay_exchange.error(500, "api_error", relay_exchange.INTERNAL)


async def _serve(asked: relay_exchange.Asked, send: Send) -> None:
    answer = await _answer(asked)
    try:
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer.headers]
        if answer.chunks is None:
            headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        if answer.chunks is None:
            await send({"type": "http.response.body", "body": answer.body})
            return
        async for chunk in answer.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except httpx.HTTPError as exc:  # the upstream broke off mid-answer: so does the tool's
        logger.warning("relay: the Messages API's answer broke off (%s)", type(exc).__name__)
        return  # the server closes the tool's connection: its answer is incomplete
    finally:
        if answer.chunks is not None:  # however it ended: the upstream closes, usage counts
            await answer.chunks.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def application(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """ASGI app for http requests under relay_exchange.PREFIX. A tool that hangs up cancels its
    exchange at once, whatever it waits for (an account, the upstream's headers, a chunk that
    may be minutes away): the upstream request is closed and the request counted."""
    path: str = scope["path"]
    body = await read_body(receive)
    if body is None:
        return
    prefix = relay_exchange.PREFIX
    asked = relay_exchange.Asked(
        method=scope["method"],
        endpoint=path[len(prefix) :] if path.startswith(prefix + "/") else "",
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=_headers(scope),
        body=body,
    )
    serving = asyncio.ensure_future(_serve(asked, send))
    watching = asyncio.ensure_future(_gone(receive))
    try:
        await asyncio.wait({serving, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
