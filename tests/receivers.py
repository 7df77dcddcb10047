"""Real local receivers for notifications: an HTTP server in a thread that answers with scripted
status codes and keeps what it got, and an aiosmtpd SMTP server on loopback."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from . import processes


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Answers each POST with the next of `answers` (the last one repeats)."""

    answers: list[int] = field(default_factory=lambda: [200])
    port: int = 0
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/secret-path-123"

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.got if 200 <= r.answered < 300]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    index = min(len(receiver.got), len(receiver.answers) - 1)
                    status = receiver.answers[index]
                    receiver.got.append(Received(self.path, dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def receiver(*answers: int, port: int = 0) -> Iterator[Receiver]:
    running = Receiver(answers=list(answers or (200,)), port=port).start()
    try:
        yield running
    finally:
        running.stop()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[Message]]]:
    """An SMTP server on loopback; yields its port and the messages it accepted."""
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=processes.free_port())
    controller.start()
    try:
        yield controller.port, mailbox.messages
    finally:
        controller.stop()


def readme_verify() -> Any:
    """The `verify` function of README's Notifications section, exactly as documented."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Notifications", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "README's Notifications section lost its recipe"
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)  # noqa: S102 (our own README, tested as documented)
    return scope["verify"]
