"""Keep secrets out of messages that are logged, stored in the history or shown."""

import re
from collections.abc import Iterable

_SECRET_PATTERNS = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+"),
    # Any long opaque run (tokens, codes, keys) that is not plain prose.
    re.compile(r"[A-Za-z0-9_\-]{32,}"),
)
MAX_MESSAGE = 300
# A run of token characters this long that is part of a secret the call sent is masked too: a
# provider that quotes a token cut short ("token abcd1234… is invalid") still quotes the secret.
_QUOTED_PART = 8
_TOKEN_RUN = re.compile(rf"[A-Za-z0-9._~+/=\-]{{{_QUOTED_PART},}}")
# Shorter "secrets" (a stray one-letter value) are not masked: they would erase prose.
_SHORTEST_SECRET = 6


def _mask_part(run: str, sent: list[str]) -> str:
    """A run of token characters that is a piece of a sent secret, masked (a sentence's full
    stop after it kept)."""
    piece = run.rstrip(".")
    if len(piece) >= _QUOTED_PART and any(piece in secret for secret in sent):
        return "[redacted]" + run[len(piece) :]
    return run


def redact(
    text: str, *, limit: int = MAX_MESSAGE, fold: bool = True, secrets: Iterable[str] = ()
) -> str:
    """Mask token-like strings and trim; `fold` makes it one line. `secrets` are the values the
    call actually sent (a refresh token, an access token, a code): masked wherever they appear,
    whole or in part, whatever their shape, before the fixed patterns run."""
    text = " ".join(str(text).split()) if fold else str(text)
    sent = sorted({s for s in secrets if s and len(s) >= _SHORTEST_SECRET}, key=len, reverse=True)
    for secret in sent:
        text = text.replace(secret, "[redacted]")
    if sent:
        text = _TOKEN_RUN.sub(lambda run: _mask_part(run[0], sent), text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
