"""Finishing a key rotation: every stored secret re-encrypted under the first configured key, so
the older keys can be dropped (`manage.py reencrypt`; DESIGN.md 4.1).

Every encrypted column of every model is covered (found by field type, so a new one cannot be
missed), in batches by primary key, each batch one transaction. A row is written only when a
secret is under an older key, and only if it still holds what was read (a refresh that rotated
it meanwhile wrote it under the first key already), so running it twice, or again after it was
killed, redoes nothing. Accounts also get their refresh-token fingerprint re-keyed (it is keyed
by the first key). A row no configured key reads is left as it is, counted, and its account
marked unreadable (credentials.py); a marked account that reads again is cleared."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.apps import apps
from django.db import transaction
from django.db.models import Model, QuerySet, TextField
from django.db.models.functions import Cast

from ..crypto import EncryptedTextField, KeyCheck, decrypt, fingerprint, fingerprints, key_check
from ..models import Account
from .credentials import credential_readable_again, credential_unreadable_mark

BATCH = 500
SHOWN_IDS = 20  # unreadable ids listed per model; the count is always complete


@dataclass
class Tally:
    """What one model's pass found."""

    label: str
    rows: int = 0
    reencrypted: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[Any] = field(default_factory=list)

    def line(self) -> str:
        ids = ", ".join(str(pk) for pk in self.unreadable[:SHOWN_IDS])
        more = " …" if len(self.unreadable) > SHOWN_IDS else ""
        unreadable = f", {len(self.unreadable)} unreadable (ids {ids}{more})" if ids else ""
        return (
            f"{self.label}: {self.rows} rows, {self.reencrypted} re-encrypted, "
            f"{self.current} already under the first key, "
            f"{self.changed_meanwhile} rewritten meanwhile (left as written){unreadable}"
        )


def encrypted_models() -> list[tuple[type[Model], tuple[str, ...]]]:
    """Every model of the project with encrypted columns, and those columns' field names."""
    found = []
    for model in apps.get_models():
        names = tuple(
            f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)
        )
        if names:
            found.append((model, names))
    return found


# Read with an account's secrets: its keyed marks, re-keyed with them.
ACCOUNT_MARKS = ("refresh_token_fingerprint", "relogin_required_for")


def _batches(
    model: type[Model], names: tuple[str, ...], size: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows' primary keys, raw ciphertexts (and an account's marks), a batch at a time,
    read as text (_sealed), not through the encrypted fields (which would decrypt them)."""
    extra = ACCOUNT_MARKS if model is Account else ()
    after: Any = 0 if model._meta.pk.get_internal_type().endswith("AutoField") else ""
    while True:
        rows = list(
            _sealed(model._default_manager.all(), names)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", *(f"sealed_{name}" for name in names), *extra)[:size]
        )
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _sealed(rows: QuerySet[Any], names: tuple[str, ...]) -> QuerySet[Any]:
    """The rows with each encrypted field also as its stored ciphertext (`sealed_<name>`)."""
    sealed: QuerySet[Any] = rows.annotate(
        **{f"sealed_{name}": Cast(name, TextField()) for name in names}
    )
    return sealed


def _row(
    model: type[Model], names: tuple[str, ...], row: tuple[Any, ...], tally: Tally
) -> bool | None:
    """Re-encrypt one row if it needs it. True: readable, False: unreadable, None: it changed
    under us."""
    pk, stored = row[0], dict(zip(names, row[1 : 1 + len(names)], strict=True))
    checks = {name: key_check(value) for name, value in stored.items() if value}
    if any(check == KeyCheck.NONE for check in checks.values()):
        tally.unreadable.append(pk)
        return False
    changes: dict[str, Any] = {
        name: decrypt(stored[name]) for name, check in checks.items() if check == KeyCheck.OLDER
    }
    if model is Account and stored.get("refresh_token"):
        marks = row[1 + len(names) :]
        changes.update(_refingerprint(decrypt(stored["refresh_token"]), *marks))
    if not changes:
        tally.current += 1
        return True
    # Only if every secret is still what was read: a concurrent refresh wins.
    unchanged = _sealed(model._default_manager.filter(pk=pk), names).filter(
        **{f"sealed_{name}": value for name, value in stored.items()}
    )
    if not unchanged.update(**changes):
        tally.changed_meanwhile += 1
        return None
    if any(check == KeyCheck.OLDER for check in checks.values()):
        tally.reencrypted += 1
    else:
        tally.current += 1  # only its fingerprint was re-keyed
    return True


def _refingerprint(refresh_token: str, stored: str, rejected: str) -> dict[str, Any]:
    """The account's fingerprint under the first key, and its needs-re-login mark with it (the
    mark names the same token), when either is still under an older key."""
    current, every = fingerprint(refresh_token), fingerprints(refresh_token)
    changes: dict[str, Any] = {}
    if stored != current:
        changes["refresh_token_fingerprint"] = current
    if rejected and rejected != current and rejected in every:
        changes["relogin_required_for"] = current
    return changes


def reencrypt_model(
    model: type[Model],
    names: tuple[str, ...],
    *,
    now: datetime,
    batch: int = BATCH,
    on_batch: Any = None,
) -> Tally:
    """Re-encrypt one model's rows, a transaction per batch; `on_batch(tally, last_pk)` after
    each commit (progress)."""
    tally = Tally(f"{model._meta.app_label}.{model.__name__}")
    for rows in _batches(model, names, batch):
        readable: list[Any] = []
        unreadable: list[Any] = []
        with transaction.atomic():
            for row in rows:
                tally.rows += 1
                outcome = _row(model, names, row, tally)
                if outcome is not None:
                    (readable if outcome else unreadable).append(row[0])
            if model is Account:
                for account_id in unreadable:
                    credential_unreadable_mark(account_id=account_id, now=now, found_by="reencrypt")
                credential_readable_again(account_ids=readable, now=now)
        if on_batch is not None:
            on_batch(tally, rows[-1][0])
    return tally


def secrets_verify(*, now: datetime, batch: int = BATCH) -> int:
    """Check every account's stored secrets without rewriting any (the daily sweep): mark the
    ones no configured key reads, even those nothing reads in normal work (a disabled account),
    and clear the ones that read again. Returns how many are unreadable."""
    names = Account.SECRET_FIELDS
    unreadable_total = 0
    for rows in _batches(Account, names, batch):
        readable: list[int] = []
        unreadable: list[int] = []
        for row in rows:
            checks = [key_check(value) for value in row[1 : 1 + len(names)] if value]
            (unreadable if KeyCheck.NONE in checks else readable).append(row[0])
        for account_id in unreadable:
            credential_unreadable_mark(account_id=account_id, now=now, found_by="the daily check")
        credential_readable_again(account_ids=readable, now=now)
        unreadable_total += len(unreadable)
    return unreadable_total
