from __future__ import annotations

import os
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
        # Created private: writing first and restricting after leaves a moment (or, if the
        # chmod fails, for good) when anyone on the machine can read it. A leftover file may
        # carry a wider mode, which O_CREAT would keep, so it goes first.
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        self.stdout.write(
            f"Created superuser 'admin' with password {password} (also in {path}; change it in "
            "the admin and delete that file)."
        )
