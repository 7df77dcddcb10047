"""Refresh-token fingerprints become keyed (HMAC-SHA256 under a key derived from the encryption
keys) and full length, so onboarding can find a token the team already holds before it is spent.

Existing rows get the keyed fingerprint of their decrypted refresh token; a needs-re-login mark
that pointed at the current token follows it (any other mark was stale and is cleared). A row
whose token cannot be decrypted keeps its old values."""

import hashlib
from collections.abc import Callable
from typing import Any

from django.db import migrations, models
from django.db.models.functions import Cast

from accounts_pool.crypto import SecretDecryptionError, decrypt, fingerprint

BATCH = 500


def _legacy_fingerprint(secret: str) -> str:
    """What 0001-0007 stored: an unkeyed SHA-256 prefix."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""


def _recompute(apps: Any, mark: Callable[[str], str]) -> int:
    """Set every decryptable row's fingerprint to mark(refresh token); returns rows changed."""
    account_model = apps.get_model("accounts_pool", "Account")
    # The ciphertext as stored: the field's own converter would raise on an unreadable row.
    rows = (
        account_model.objects.annotate(ciphertext=Cast("refresh_token", models.TextField()))
        .values_list("pk", "ciphertext", "refresh_token_fingerprint", "relogin_required_for")
        .order_by("pk")
    )
    changed = []
    for pk, ciphertext, old_mark, relogin_for in rows.iterator(chunk_size=BATCH):
        try:
            token = decrypt(ciphertext) if ciphertext else ""
        except SecretDecryptionError:
            continue
        new_mark = mark(token)
        relogin = new_mark if relogin_for and relogin_for == old_mark else ""
        if (new_mark, relogin) != (old_mark, relogin_for):
            changed.append(
                account_model(
                    pk=pk, refresh_token_fingerprint=new_mark, relogin_required_for=relogin
                )
            )
    account_model.objects.bulk_update(
        changed, ["refresh_token_fingerprint", "relogin_required_for"], batch_size=BATCH
    )
    return len(changed)


def keyed_fingerprints(apps: Any, schema_editor: Any) -> None:
    _recompute(apps, fingerprint)


def legacy_fingerprints(apps: Any, schema_editor: Any) -> None:
    _recompute(apps, _legacy_fingerprint)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts_pool", "0007_checkout_key_index_in_session_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="account",
            name="refresh_token_fingerprint",
            field=models.CharField(
                blank=True,
                help_text="Keyed fingerprint (HMAC-SHA256) of the current refresh token: finds a "
                "token the team already holds without decrypting every row.",
                max_length=64,
            ),
        ),
        migrations.AlterField(
            model_name="account",
            name="relogin_required_for",
            field=models.CharField(
                blank=True,
                help_text="Fingerprint of the refresh token the provider rejected "
                "(invalid_grant). Needs re-login while it matches the current refresh token.",
                max_length=64,
            ),
        ),
        migrations.AddIndex(
            model_name="account",
            index=models.Index(fields=["refresh_token_fingerprint"], name="account_refresh_fp_idx"),
        ),
        migrations.RunPython(keyed_fingerprints, legacy_fingerprints, elidable=False),
    ]
