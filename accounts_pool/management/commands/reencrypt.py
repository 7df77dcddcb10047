from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from ...services.reencrypt import BATCH, Tally, encrypted_models, reencrypt_model

UNREADABLE_EXIT = 3


class Command(BaseCommand):
    verbosity = 1
    help = (
        "Re-encrypt every stored secret (accounts of every kind, disabled ones included, and "
        "pending logins) under the first key of ACCOUNTS_POOL_ENCRYPTION_KEYS, so the older "
        "keys can be dropped. Batches by primary key, each committed; idempotent, so run it "
        "again after an interruption. Exit 0: every row reads with the first key; "
        f"{UNREADABLE_EXIT}: some rows read with no configured key (listed; their accounts are "
        "marked and excluded); 1: bad arguments or the database failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH,
            metavar="N",
            help=f"Rows per transaction (default {BATCH}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        size = options["batch_size"]
        if not 1 <= size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000.")
        self.verbosity = options["verbosity"]
        now = timezone.now()
        tallies: list[Tally] = []
        try:
            for model, names in encrypted_models():
                tallies.append(
                    reencrypt_model(model, names, now=now, batch=size, on_batch=self._progress)
                )
        except DatabaseError as exc:
            raise CommandError(
                f"Database failed ({type(exc).__name__}); rows of committed batches are done, "
                "run it again to finish."
            ) from exc
        for tally in tallies:
            self.stdout.write(tally.line())
        unreadable = sum(len(t.unreadable) for t in tallies)
        if unreadable:
            raise CommandError(
                f"{unreadable} row(s) cannot be decrypted with any configured key: add the key "
                "they were written with to ACCOUNTS_POOL_ENCRYPTION_KEYS and run this again, or "
                "log those accounts in again.",
                returncode=UNREADABLE_EXIT,
            )
        self.stdout.write("reencrypt done: every stored secret is under the first key.")

    def _progress(self, tally: Tally, last_pk: Any) -> None:
        if self.verbosity >= 2:
            self.stdout.write(f"{tally.label}: {tally.rows} rows so far, up to id {last_pk}")
