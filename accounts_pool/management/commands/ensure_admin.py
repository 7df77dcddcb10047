from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "First run only: when no superuser exists, create 'admin' with a random password, print "
        "it, and keep a copy in var/initial-admin-password (readable by you only)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        path = Path(settings.VAR_DIR) / "initial-admin-password"
        path.write_text(password + "\n")
        path.chmod(0o600)
        self.stdout.write(
            f"Created superuser 'admin' with password {password} (also in {path}; change it in "
            "the admin and delete that file)."
        )
