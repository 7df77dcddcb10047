from django.apps import AppConfig


class AccountsPoolConfig(AppConfig):
    name = "accounts_pool"
    verbose_name = "Accounts pool"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, crypto  # noqa: F401  (checks: registers the system checks)

        # Fail closed at start-up: web, worker, beat and commands refuse to run with a missing or
        # malformed encryption key rather than write secrets they could not read back.
        crypto.load_keys()
