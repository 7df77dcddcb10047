"""The floor of bench/relay.py: the least an ASGI pass-through to the Messages API can do.

It reads the body, sends it upstream with one fixed account token (RELAY_FLOOR_TOKEN) on one
shared httpx.AsyncClient, and streams the answer back chunk by chunk. No key check, no choice of
account, no database, no failover: what is left of the relay's cost once those are gone.

    RELAY_FLOOR_UPSTREAM=http://127.0.0.1:8765 RELAY_FLOOR_TOKEN=sk-ant-oat01-… \\
        uvicorn relay_floor:app --app-dir bench
"""

from __future__ import annotations

import os
from typing import Any

import httpx

UPSTREAM = os.environ.get("RELAY_FLOOR_UPSTREAM", "http://127.0.0.1:8765")
TOKEN = os.environ.get("RELAY_FLOOR_TOKEN", "")
PREFIX = "/relay/anthropic"
_client: httpx.AsyncClient | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if _client is None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        _client = httpx.AsyncClient(base_url=UPSTREAM, timeout=600, limits=limits)
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [
        (k.decode(), v.decode())
        for k, v in scope["headers"]
        if k not in (b"host", b"authorization", b"x-api-key", b"content-length")
    ]
    headers += [("authorization", f"Bearer {TOKEN}"), ("anthropic-beta", "oauth-2025-04-20")]
    request = _client.build_request(
        "POST", scope["path"].removeprefix(PREFIX), headers=headers, content=body
    )
    answer = await _client.send(request, stream=True)
    try:
        returned = [
            (k, v)
            for k, v in answer.headers.raw
            if k.lower() not in (b"content-length", b"transfer-encoding", b"connection")
        ]
        await send(
            {"type": "http.response.start", "status": answer.status_code, "headers": returned}
        )
        async for chunk in answer.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await answer.aclose()
