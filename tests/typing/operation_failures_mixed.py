"""mypy must reject this module (tests/test_typing.py expects exactly these errors).

Recording a token-endpoint failure as a quota failure, or the reverse, is the classic bug of
this field (DESIGN.md 3.1): a token 403 taken for the organisation's policy never armed the
refresh backoff. Each operation's failure is its own type, so the mistake cannot type-check."""

from __future__ import annotations

from datetime import datetime

from accounts_pool.models import Account
from accounts_pool.services.quota import quota_record_failure
from accounts_pool.services.refresh import refresh_record_failure
from accounts_pool.state import FailureKind, QuotaFailure, TokenFailure, quota_failure_effect


def token_403_recorded_as_quota(account: Account, now: datetime) -> None:
    token_403 = TokenFailure(kind=FailureKind.REJECTED, status=403)
    quota_record_failure(account, token_403, now, "cycle")  # error: TokenFailure, not quota


def token_403_classified_as_quota(now: datetime) -> None:
    token_403 = TokenFailure(kind=FailureKind.REJECTED, status=403)
    quota_failure_effect(
        token_403,  # error: TokenFailure, not quota
        previous_failures=0,
        token_from_401=False,
        now=now,
    )


def quota_403_recorded_as_token(account: Account, now: datetime) -> None:
    policy_403 = QuotaFailure(kind=FailureKind.REJECTED, status=403)
    refresh_record_failure(account, policy_403, now, "cycle")  # error: QuotaFailure, not token
