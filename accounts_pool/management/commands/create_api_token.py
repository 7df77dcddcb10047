from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...services.keys import api_token_create


class Command(BaseCommand):
    help = "Create a personal API token for USERNAME and print it once (only a hash is kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for.")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        name = options["name"].strip()
        if not name:
            raise CommandError("--name must not be empty.")
        _, secret = api_token_create(user=user, name=name)
        self.stdout.write(secret)
