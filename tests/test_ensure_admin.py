"""ensure_admin's first password is never readable by anyone else, not even for an instant."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command


@pytest.fixture
def var_dir(tmp_path, settings):
    settings.VAR_DIR = tmp_path
    old = os.umask(0o022)  # the usual umask: files are world-readable unless made otherwise
    yield tmp_path
    os.umask(old)


@pytest.fixture
def no_chmod(monkeypatch):
    """A file is only as private as it was made: a chmod after the write comes too late."""
    monkeypatch.setattr(Path, "chmod", lambda *args, **kwargs: None)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_it_creates_the_password_file_readable_by_its_owner_only(db, var_dir, no_chmod):
    call_command("ensure_admin", stdout=io.StringIO())

    path = var_dir / "initial-admin-password"
    assert _mode(path) == 0o600
    assert User.objects.get(username="admin").check_password(path.read_text().strip())


def test_it_replaces_a_readable_leftover_file_with_a_private_one(db, var_dir, no_chmod):
    leftover = var_dir / "initial-admin-password"
    leftover.write_text("old\n")
    os.chmod(leftover, 0o644)

    call_command("ensure_admin", stdout=io.StringIO())

    assert _mode(leftover) == 0o600
    assert leftover.read_text() != "old\n"
