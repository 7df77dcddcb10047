"""A request body is refused by its size before anything reads, parses or stores it.

Multipart bodies were written to disk before any size check: Django spools an upload past
FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) to a temporary file, however large, and only then does the
form see its size. Under ASGI (the relay's uvicorn) Django buffers any body, to disk past that
size, before any middleware runs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import Client, override_settings

from accounts_pool.models import Account

from . import processes

MIB = 1024 * 1024


@pytest.fixture
def spooled(monkeypatch) -> list[str]:
    """Every upload Django starts writing to a temporary file."""
    files: list[str] = []
    real = TemporaryFileUploadHandler.new_file

    def spy(self, *args: Any, **kwargs: Any) -> None:
        files.append(args[1] if len(args) > 1 else "?")
        real(self, *args, **kwargs)

    monkeypatch.setattr(TemporaryFileUploadHandler, "new_file", spy)
    return files


def _upload(client: Client, size: int) -> Any:
    data = io.BytesIO(b"{" + b" " * (size - 2) + b"}")
    data.name = "credentials.json"
    return client.post("/pools/claude/add/file/", {"file": data, "label": "big"})


@pytest.mark.django_db
def test_a_large_upload_is_refused_before_it_is_read(alice, pool, spooled) -> None:
    client = Client()
    client.force_login(alice)
    response = _upload(client, 3 * MIB)
    assert response.status_code == 413
    assert spooled == []
    assert not Account.objects.exists()


@pytest.mark.django_db
def test_an_upload_within_the_limit_stays_in_memory(alice, pool, spooled) -> None:
    client = Client()
    client.force_login(alice)
    response = _upload(client, int(1.9 * MIB))  # under the body limit, over the form's
    assert response.status_code == 400
    assert "larger than 256 KiB" in response.content.decode()
    assert spooled == []


@pytest.mark.django_db
def test_the_api_refuses_a_large_body_in_its_error_shape(alice, pool) -> None:
    from accounts_pool.services.keys import api_token_create

    _, token = api_token_create(user=alice, name="cli")
    response = Client().post(
        "/api/v1/pools/claude/accounts/import",
        b"[" + b"0," * MIB + b"0]",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_a_content_length_that_is_not_a_number_is_a_400() -> None:
    for value in ("abc", "-1", "1e9", "\uff11\uff12"):  # fullwidth digits
        response = Client().post(
            "/api/v1/teams", "{}", content_type="application/json", CONTENT_LENGTH=value
        )
        assert response.status_code == 400, value
    # A number of 5,000 digits is a number: too large.
    response = Client().post(
        "/api/v1/teams", "{}", content_type="application/json", CONTENT_LENGTH="9" * 5000
    )
    assert response.status_code == 413


def _asgi(
    path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, int]:
    """Send one request to the ASGI app the relay's uvicorn serves: (status, body, chunks read)."""
    from config.asgi import application as app

    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {
                "type": "http.request",
                "body": chunks[read - 1],
                "more_body": read < len(chunks),
            }
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }  # fmt: skip
    async_to_sync(app)(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, read


@pytest.mark.django_db(transaction=True)
@override_settings(RELAY_MAX_BODY_BYTES=64 * 1024)
def test_asgi_cuts_off_a_streamed_body_at_the_limit() -> None:
    chunks = [b"x" * 16 * 1024] * 100  # 1.6 MB, chunked: no Content-Length
    status, body, read = _asgi("/relay/anthropic/v1/messages", chunks, [])
    assert status == 413
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert read == 5  # stopped reading just past 64 KiB, not after 1.6 MB


@pytest.mark.django_db(transaction=True)
@override_settings(RELAY_MAX_BODY_BYTES=64 * 1024)
def test_asgi_refuses_a_declared_length_before_reading() -> None:
    status, _, read = _asgi(
        "/relay/anthropic/v1/messages", [b"x"] * 3, [(b"content-length", b"10000000000")]
    )
    assert status == 413
    assert read == 0
    status, _, read = _asgi("/api/v1/teams", [b"{}"], [(b"content-length", b"12x")])
    assert status == 400
    assert read == 0


@pytest.mark.slow
@pytest.mark.django_db
def test_gunicorn_answers_a_huge_declared_body_at_once(tmp_path) -> None:
    """10 GB declared, none of it sent: the answer comes at once (nothing waits to read it)."""
    port = processes.free_port()
    env = processes.child_env(DEBUG="false")
    log = tmp_path / "gunicorn.log"
    server = processes.start(
        [str(processes.VENV_BIN / "gunicorn"), "config.wsgi:application", "--config",
         "python:config.gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env, log,
    )  # fmt: skip
    try:
        processes.wait_for(lambda: _connects(port), 60, "gunicorn", log)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(
                b"POST /pools/claude/add/file/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n"
                b"Content-Length: 10000000000\r\n\r\n--x\r\n"
            )
            answer = sock.recv(4096).decode(errors="replace")
            waited = time.monotonic() - started
    finally:
        processes.stop(server)
    assert answer.startswith("HTTP/1.1 413"), answer
    assert waited < 5  # not gunicorn's 30 s timeout waiting for a body that never comes


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@override_settings(DEBUG=True)  # Django logs the adaptation only then
def test_our_middleware_costs_an_async_stack_no_thread_hop(caplog) -> None:
    """Django adapts a sync-only middleware in an async stack with a thread hop per request
    (and logs it at DEBUG): ours are async-capable, so Django under ASGI takes none for them
    (the relay's own app runs no Django middleware at all)."""
    from django.core.handlers.asgi import ASGIHandler

    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler().load_middleware(is_async=True)
    adapted = [r.getMessage() for r in caplog.records if "adapted for middleware" in r.getMessage()]
    assert adapted  # some of Django's own are adapted: the log is on
    assert not [line for line in adapted if "accounts_pool.middleware" in line], adapted


@pytest.mark.slow
@pytest.mark.django_db
def test_uvicorn_serves_the_relay_through_the_body_limit(tmp_path) -> None:
    """The relay's process for real: a small body is read and answered (401: no such key); a
    chunked body streaming past RELAY_MAX_BODY_BYTES is cut off with a 413."""
    port = processes.free_port()
    env = processes.child_env(DEBUG="false", RELAY_MAX_BODY_BYTES=str(64 * 1024))
    log = tmp_path / "uvicorn.log"
    server = processes.start(
        [str(processes.VENV_BIN / "uvicorn"), "config.asgi:application", "--log-config",
         "config/uvicorn-logging.json", "--host", "127.0.0.1", "--port", str(port),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log"],
        env, log,
    )  # fmt: skip
    try:
        processes.wait_for(lambda: _connects(port), 60, "uvicorn", log)
        small = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []})
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /relay/anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"x-api-key: apk_nobody\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(small)}\r\n\r\n{small}".encode()
            )
            assert sock.recv(4096).decode().startswith("HTTP/1.1 401")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /relay/anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            answer = b""
            with contextlib.suppress(OSError):
                for _ in range(200):  # up to 3.2 MB, far past the 64 KiB limit
                    sock.sendall(b"4000\r\n" + b" " * 0x4000 + b"\r\n")
            with contextlib.suppress(OSError):
                answer = sock.recv(4096)
    finally:
        processes.stop(server)
    assert answer.decode(errors="replace").startswith("HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer


@pytest.mark.django_db(transaction=True)
def test_asgi_refuses_oversized_cookies_for_the_relay_too() -> None:
    # The relay's handler runs no Django middleware: the ASGI wrapper bounds its cookies.
    attack = [(b"cookie", f"c{i}=".encode() + b"\\" * 8000) for i in range(20)]
    status, body, read = _asgi("/relay/anthropic/v1/messages", [b"{}"], attack)
    assert status == 431
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert read == 0
