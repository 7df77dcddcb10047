"""Messages stored in the history or logged never carry a token."""

import pytest

from accounts_pool.redaction import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "refresh token sk-ant-ort01-AbC_123-xyz was revoked",
            "refresh token [redacted] was revoked",
        ),
        ("header Authorization: Bearer abc.def-ghi", "header Authorization: [redacted]"),
        ("code " + "Z" * 40 + " expired", "code [redacted] expired"),
        (
            "OAuth authentication is currently not allowed for this organization.",
            "OAuth authentication is currently not allowed for this organization.",
        ),
        ("many\n  lines\tfolded", "many lines folded"),
    ],
)
def test_it_masks_tokens_and_keeps_prose(text, expected):
    assert redact(text) == expected


def test_it_trims_long_messages():
    assert len(redact("word " * 200)) == 300
