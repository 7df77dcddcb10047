"""Stored secrets the configured keys cannot read (a key dropped before `manage.py reencrypt`
ran): the account is marked, and the mark is a reason of its own (state.ReasonCode.
CREDENTIAL_UNREADABLE) that excludes that one account, never its pool.

Whoever first fails to decrypt an account's secret marks it (checkout, a refresh, a quota
check, reencrypt, the daily sweep); reencrypt and the sweep clear the mark once the row reads
again, and a re-login clears it by writing new secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from .. import state
from ..crypto import SecretDecryptionError
from ..models import Account
from .events import event_record

logger = logging.getLogger("accounts_pool.credentials")


def credential_unreadable_mark(*, account_id: int, now: datetime, found_by: str) -> bool:
    """Mark the account's stored secrets unreadable (once: a conditional UPDATE, so two
    finders write one history row). Returns whether this call marked it."""
    marked = Account.objects.filter(pk=account_id, credential_unreadable_at__isnull=True).update(
        credential_unreadable_at=now
    )
    if marked:
        event_record(
            account_id=account_id,
            at=now,
            operation=state.Operation.DECRYPTION,
            outcome="unreadable",
            message=f"{found_by} could not decrypt its stored credential with the configured "
            "encryption keys; excluded until the key is back (then manage.py reencrypt) or "
            "it is logged in again",
        )
    return bool(marked)


def credential_readable_again(*, account_ids: Iterable[int], now: datetime) -> int:
    """Clear the mark of these accounts, whose secrets read again; returns how many."""
    cleared = list(
        Account.objects.filter(
            pk__in=list(account_ids), credential_unreadable_at__isnull=False
        ).values_list("pk", flat=True)
    )
    for account_id in cleared:
        if Account.objects.filter(pk=account_id, credential_unreadable_at__isnull=False).update(
            credential_unreadable_at=None
        ):
            event_record(
                account_id=account_id,
                at=now,
                operation=state.Operation.DECRYPTION,
                outcome="readable_again",
                message="its stored credential decrypts with the configured keys again",
            )
    return len(cleared)


def checkout_credential(account: Account, *, now: datetime) -> Account | None:
    """The chosen account, when the credential checkout hands out decrypts; else None, with
    the account marked (excluded with its own reason), so checkout tries the next one instead
    of failing the whole pool. Reading a deferred secret here loads it."""
    try:
        account.api_key if account.kind == Account.Kind.API_KEY else account.access_token  # noqa: B018
    except SecretDecryptionError:
        logger.warning("account=%s credential unreadable; checkout skips it", account.pk)
        credential_unreadable_mark(account_id=account.pk, now=now, found_by="checkout")
        return None
    return account


def unreadable_count() -> int:
    """Accounts marked unreadable (for /healthz; a partial index keeps it cheap)."""
    return Account.objects.filter(credential_unreadable_at__isnull=False).count()
