"""Keep secrets out of messages that are logged, stored in the history or shown."""

import re

_SECRET_PATTERNS = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+"),
    # Any long opaque run (tokens, codes, keys) that is not plain prose.
    re.compile(r"[A-Za-z0-9_\-]{32,}"),
)
MAX_MESSAGE = 300


def redact(text: str, *, limit: int = MAX_MESSAGE) -> str:
    """Mask token-like strings and trim to one short line."""
    text = " ".join(str(text).split())
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
