"""JSON from people and tools, read with bounds: nesting no real document needs, and text no
database or encoder can hold, are refused as bad input instead of failing deep inside a service.

The API's parser, the credentials-file form and the import command read JSON through here."""

from __future__ import annotations

import json
import re
from typing import Any

# The deepest real document (an anthropic-auth accounts file) nests 4 levels.
MAX_DEPTH = 32
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class UnreadableJson(ValueError):
    """The input is not JSON we accept. The message completes "The file is …" or "The body is …"
    for the person who sent it."""


def json_loads(raw: bytes | str) -> Any:
    """Parse `raw` as JSON nested at most MAX_DEPTH deep, with no lone surrogate in any string."""
    try:
        document = json.loads(raw)
    except RecursionError:
        raise UnreadableJson(f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:  # malformed, or not UTF-8
        raise UnreadableJson("not JSON") from None
    json_check(document)
    return document


def json_check(document: Any) -> None:
    """Walks without recursion, so any depth is measured rather than overflowing the stack."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise UnreadableJson("not text: it holds a lone surrogate (\\ud800-\\udfff)")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise UnreadableJson(f"nested more than {MAX_DEPTH} levels deep")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
