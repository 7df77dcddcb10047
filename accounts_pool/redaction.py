"""Keep secrets out of messages that are logged, stored in the history or shown."""

import re

_SECRET_PATTERNS = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+"),
    # Any long opaque run (tokens, codes, keys) that is not plain prose.
    re.compile(r"[A-Za-z0-9_\-]{32,}"),
)
MAX_MESSAGE = 300


def redact(text: str, *, limit: int = MAX_MESSAGE, fold: bool = True) -> str:
    """Mask token-like strings and trim; `fold` makes it one line."""
    text = " ".join(str(text).split()) if fold else str(text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
