"""Secrets at rest: Fernet keys from ACCOUNTS_POOL_ENCRYPTION_KEYS (the first encrypts, all
decrypt), and a model field that stores only ciphertext."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

KEYS_SETTING = "ACCOUNTS_POOL_ENCRYPTION_KEYS"


class SecretDecryptionError(RuntimeError):
    """A stored secret cannot be read with the configured keys (wrong or rotated-out key)."""


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured(
            f"Set {KEYS_SETTING} to one or more comma-separated Fernet keys; make one with: "
            "python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{KEYS_SETTING}: key #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def load_keys() -> MultiFernet:
    return _multifernet(tuple(k for k in settings.ACCOUNTS_POOL_ENCRYPTION_KEYS if k.strip()))


def encrypt(plaintext: str) -> str:
    return load_keys().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return load_keys().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            f"A stored secret cannot be decrypted with the keys in {KEYS_SETTING}."
        ) from None


def fingerprint(secret: str) -> str:
    """A short, non-reversible tag for a secret: tells two refresh tokens apart, reveals none."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""


class EncryptedTextField(models.TextField[str, str]):
    """A text field whose database value is Fernet ciphertext. Empty stays empty."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str:
        if not value:
            return ""
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if not value:
            return ""
        return encrypt(value)
