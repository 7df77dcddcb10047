from typing import Any

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import pre_migrate


def _no_statement_timeout(using: str = "default", **kwargs: Any) -> None:
    """Migrations may rewrite big tables: DB_STATEMENT_TIMEOUT guards requests and tasks, not
    the release step, so a migrating connection runs without it."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")


class AccountsPoolConfig(AppConfig):
    name = "accounts_pool"
    verbose_name = "Accounts pool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, crypto  # noqa: F401  (checks: registers the system checks)

        # Fail closed at start-up: web, worker, beat and commands refuse to run with a missing or
        # malformed encryption key rather than write secrets they could not read back.
        crypto.load_keys()
        pre_migrate.connect(_no_statement_timeout, dispatch_uid="accounts_pool.no_timeout")
