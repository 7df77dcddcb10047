"""Log lines without secrets, and one JSON object per line when LOG_FORMAT=json.

URLs carry secrets on two paths: an invite link (`/invite/<token>/`) and an OAuth callback's
or a pasted link's query (`code`, `state`, `token`, ...). `mask_url_secrets` masks both
wherever a URL shows up in a line: gunicorn's access log (config/gunicorn.py) and Django's own
"Not Found: /invite/..." lines (the MaskSecrets filter on every handler)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from .redaction import redact

MASK = "[redacted]"
SECRET_QUERY_NAMES = (
    "token|code|state|session|key|api_key|apikey|access_token|refresh_token|password|secret"
    "|invite|sig|signature"
)
_SECRET_PATH = re.compile(r"(/invite/)[^/?#\s\"']+", re.IGNORECASE)
_SECRET_QUERY = re.compile(rf"([?&;](?:{SECRET_QUERY_NAMES})=)[^&;#\s\"']*", re.IGNORECASE)
# The same inside a percent-encoded URL (a login page's `?next=/pools/p/login/%3Fcode%3D...`).
_ENCODED_PATH = re.compile(r"(%2Finvite%2F)(?:[^%/?#&\s\"']|%(?!2F)[0-9A-F]{2})+", re.IGNORECASE)
_ENCODED_QUERY = re.compile(
    rf"((?:%3F|%26|%3B)(?:{SECRET_QUERY_NAMES})%3D)(?:[^%&;#\s\"']|%(?!26|3B)[0-9A-F]{{2}})*",
    re.IGNORECASE,
)


def mask_url_secrets(text: str) -> str:
    """`text` with the invite token of any invite path, and the value of any secret-named
    query parameter, replaced by [redacted]. Pure; safe on any text."""
    lowered = text.lower()
    if "/invite/" not in lowered and "=" not in text and "%" not in text:
        return text  # most lines: nothing to do
    for pattern in (_SECRET_PATH, _SECRET_QUERY, _ENCODED_PATH, _ENCODED_QUERY):
        text = pattern.sub(rf"\g<1>{MASK}", text)
    return text


class MaskSecrets(logging.Filter):
    """On a handler: every record's message with URL secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            # Messages are written without secrets; redact again in case a library's is not.
            "message": redact(mask_url_secrets(record.getMessage()), limit=4000),
        }
        fields = getattr(record, "fields", None)  # structured extras (the access log's)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = redact(
                self.formatException(record.exc_info), limit=8000, fold=False
            )
        return json.dumps(entry, ensure_ascii=False)


def env_formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT asks for, read from the environment: for processes that log
    before Django's settings load (uvicorn's supervisor, config/uvicorn-logging.json)."""
    import os

    if os.environ.get("LOG_FORMAT", "text") == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
