from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...services.keys import API_TOKEN_DEFAULT_DAYS, API_TOKEN_MAX_DAYS, api_token_create


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it once (only a hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for.")
        parser.add_argument(
            "--days",
            type=int,
            default=API_TOKEN_DEFAULT_DAYS,
            help=f"Days until it expires (at most {API_TOKEN_MAX_DAYS}; default %(default)s).",
        )
        parser.add_argument(
            "--no-expiry", action="store_true", help="A token that never expires (revoke it)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        name = options["name"].strip()
        if not name:
            raise CommandError("--name must not be empty.")
        days = None if options["no_expiry"] else options["days"]
        if days is not None and not 1 <= days <= API_TOKEN_MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {API_TOKEN_MAX_DAYS}.")
        _, secret = api_token_create(user=user, name=name, days=days)
        self.stdout.write(secret)
