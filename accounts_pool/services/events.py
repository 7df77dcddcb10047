"""The error history: one row per state transition (DESIGN.md 3)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..models import AccountEvent
from ..redaction import redact
from ..state import Operation

logger = logging.getLogger("accounts_pool.events")

CYCLE_ACTOR = "cycle"


def event_record(
    *,
    account_id: int,
    at: datetime,
    operation: Operation,
    outcome: str,
    http_status: int | None = None,
    message: str = "",
    retry_after: timedelta | None = None,
    until: datetime | None = None,
    actor: str = CYCLE_ACTOR,
) -> AccountEvent:
    """Append a history row (message redacted) and log the same line."""
    event = AccountEvent.objects.create(
        account_id=account_id,
        at=at,
        operation=operation.value,
        outcome=outcome,
        http_status=http_status,
        message=redact(message),
        retry_after_seconds=int(retry_after.total_seconds()) if retry_after is not None else None,
        until=until,
        actor=actor[:150],
    )
    logger.info(
        "account=%s operation=%s outcome=%s status=%s until=%s actor=%s message=%s",
        account_id,
        event.operation,
        outcome,
        http_status,
        until.isoformat() if until else "-",
        event.actor,
        event.message,
    )
    return event


def events_prune(*, now: datetime, older_than: timedelta) -> int:
    """Delete history older than the retention; returns how many rows went."""
    deleted, _ = AccountEvent.objects.filter(at__lt=now - older_than).delete()
    return deleted
