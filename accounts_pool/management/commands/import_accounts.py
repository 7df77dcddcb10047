from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...jsoninput import UnreadableJson, json_loads
from ...models import Pool
from ...services.errors import ServiceError
from ...services.onboarding import accounts_import


class Command(BaseCommand):
    help = (
        "Import accounts into a pool from a Claude Code credentials file ({'claudeAiOauth': "
        "...}) or an anthropic-auth accounts file ({'version': 1, 'accounts': [...]}): all or "
        "none. Prints how many were imported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", metavar="SLUG", required=True, help="Target pool.")
        parser.add_argument("--label", default="", help="Label (for a single-account file).")
        parser.add_argument("file", help="Path of the JSON file.")

    def handle(self, *args: Any, **options: Any) -> None:
        pool = Pool.objects.filter(slug=options["pool"]).first()
        if pool is None:
            raise CommandError(f"No pool with slug {options['pool']!r}.")
        path = Path(options["file"])
        try:
            document = json_loads(path.read_bytes())
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        except UnreadableJson as exc:
            raise CommandError(f"{path} is {exc}.") from None
        try:
            created = accounts_import(
                pool=pool, document=document, label=options["label"], actor="command:import"
            )
        except ServiceError as exc:
            lines = [exc.message]
            for entry in exc.details or []:
                lines.append(f"  entry {entry.get('index')}: {entry.get('error')}")
            raise CommandError("\n".join(lines)) from None
        for account in created:
            self.stdout.write(f"imported account {account.pk} {account.label!r}")
        self.stdout.write(f"{len(created)} account(s) imported into {pool.slug}, 0 skipped")
