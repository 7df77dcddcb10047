"""One JSON object per log line (LOG_FORMAT=json), for log collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from .redaction import redact


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            # Messages are written without secrets; redact again in case a library's is not.
            "message": redact(record.getMessage(), limit=4000),
        }
        if record.exc_info:
            entry["exception"] = redact(
                self.formatException(record.exc_info), limit=8000, fold=False
            )
        return json.dumps(entry, ensure_ascii=False)
