"""The notification channels' outside calls: resolving a webhook's host, POSTing a webhook or a
Slack message, and sending email through Django's email backend.

Every call has a timeout, redirects are not followed (a redirect could lead inside the network),
and no error carries the target: a channel URL is a secret and errors are logged and shown.
"""

from __future__ import annotations

import smtplib
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from ..redaction import redact


@dataclass(frozen=True)
class Sent:
    status_code: int | None


class SendFailed(Exception):
    """A delivery attempt failed: `message` says why (no URL, no secret), with the answer's
    status code if there was one."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def resolve(url: str) -> list[str] | None:
    """The addresses the URL's host resolves to; None when it does not."""
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return sorted({str(info[4][0]) for info in infos})


def post(url: str, body: bytes, headers: dict[str, str]) -> Sent:
    """POST `body`; a 2xx is delivered, anything else raises SendFailed."""
    try:
        answer = httpx.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=settings.ACCOUNTS_POOL_NOTIFY_TIMEOUT,
            follow_redirects=False,
        )
    except httpx.TimeoutException:
        raise SendFailed("timed out") from None
    except httpx.HTTPError as exc:
        # httpx's messages name no URL for transport errors; the type says enough.
        raise SendFailed(f"could not connect ({type(exc).__name__})") from None
    if not 200 <= answer.status_code < 300:
        raise SendFailed(
            f"answered HTTP {answer.status_code}: {redact(answer.text, limit=150)}",
            answer.status_code,
        )
    return Sent(answer.status_code)


def send_email(*, to: list[str], subject: str, text: str) -> Sent:
    """One email through the configured backend (EMAIL_URL); 250 when the server accepted it."""
    try:
        connection = get_connection(timeout=settings.EMAIL_TIMEOUT)
        EmailMessage(subject, text, settings.DEFAULT_FROM_EMAIL, to, connection=connection).send()
    except smtplib.SMTPResponseException as exc:
        smtp_error = redact(str(exc.smtp_error))
        raise SendFailed(f"SMTP {exc.smtp_code}: {smtp_error}", exc.smtp_code) from None
    except smtplib.SMTPRecipientsRefused:
        raise SendFailed("the SMTP server refused every recipient", 550) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendFailed(f"could not send ({type(exc).__name__})") from None
    return Sent(250)
