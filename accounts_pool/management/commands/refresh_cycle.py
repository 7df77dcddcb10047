from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ... import metrics
from ...models import Account, Pool
from ...services.cycle import cycle_run
from ...services.quota import QuotaResult


class Command(BaseCommand):
    help = (
        "Run one token pass then one quota pass synchronously, without a broker. Prints one "
        "line per account touched. Account failures are data (exit 0); infrastructure "
        "failures exit non-zero."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", metavar="SLUG", help="Only this pool.")
        parser.add_argument("--account", metavar="ID", type=int, help="Only this account.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="With --account: refresh and check it even when nothing is due.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["force"] and options["account"] is None:
            raise CommandError("--force needs --account.")
        try:
            pool = Pool.objects.get(slug=options["pool"]) if options["pool"] else None
            if (
                options["account"] is not None
                and not Account.objects.filter(pk=options["account"]).exists()
            ):
                raise CommandError(f"No account with id {options['account']}.")
            touched = 0
            started = time.perf_counter()
            for result in cycle_run(
                pool=pool, account_id=options["account"], force=options["force"]
            ):
                touched += 1
                operation = "quota" if isinstance(result, QuotaResult) else "token"
                until = f" until {result.until.isoformat()}" if result.until else ""
                message = f" ({result.message})" if result.message else ""
                self.stdout.write(
                    f"account {result.account_id} {operation}: {result.outcome}{until}{message}"
                )
        except Pool.DoesNotExist:
            raise CommandError(f"No pool with slug {options['pool']!r}.") from None
        except DatabaseError as exc:
            raise CommandError(f"Database unavailable: {exc}") from exc
        metrics.CYCLE_SECONDS.labels("refresh_cycle_command").observe(time.perf_counter() - started)
        self.stdout.write(f"cycle done: {touched} result(s)")
