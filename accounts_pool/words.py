"""Reason codes as people read them, for the pages and the admin (DESIGN.md 3.3's vocabulary
stays the API's; a page says it in words and keeps the code for filters and tests)."""

from __future__ import annotations

from .state import ReasonCode

REASON_WORDS: dict[str, str] = {
    ReasonCode.DISABLED: "disabled",
    ReasonCode.NEEDS_RELOGIN: "needs re-login",
    ReasonCode.REFRESH_BACKOFF: "token refresh failing",
    ReasonCode.TOKEN_EXPIRED: "token expired",
    ReasonCode.ORG_POLICY_BLOCKED: "blocked by org policy",
    ReasonCode.QUOTA_EXHAUSTED: "quota used up",
    ReasonCode.QUOTA_UNKNOWN: "quota unknown",
    ReasonCode.QUOTA_STALE: "quota checks failing",
    ReasonCode.COOLDOWN: "rate-limited",
    ReasonCode.CREDENTIAL_UNREADABLE: "credential unreadable",
}


def reason_words(code: str) -> str:
    return REASON_WORDS.get(code, code.replace("_", " "))
