"""Secrets at rest: Fernet keys from ACCOUNTS_POOL_ENCRYPTION_KEYS (the first encrypts, all
decrypt), a model field that stores only ciphertext, and keyed fingerprints that tell two
secrets apart without revealing either."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
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
    return MultiFernet(list(_fernets(keys)))


@lru_cache(maxsize=4)
def _fernets(keys: tuple[str, ...]) -> tuple[Fernet, ...]:
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
    return tuple(fernets)


def _configured() -> tuple[str, ...]:
    return tuple(k for k in settings.ACCOUNTS_POOL_ENCRYPTION_KEYS if k.strip())


def load_keys() -> MultiFernet:
    return _multifernet(_configured())


class KeyCheck(enum.Enum):
    """Which configured key a stored secret is under."""

    FIRST = "first"  # the key that encrypts: nothing to do
    OLDER = "older"  # a key kept for reading: re-encrypt it under the first
    NONE = "none"  # no configured key reads it


def key_check(ciphertext: str) -> KeyCheck:
    fernets = _fernets(_configured())
    for position, fernet in enumerate(fernets):
        try:
            fernet.decrypt(ciphertext.encode())
        except InvalidToken:
            continue
        return KeyCheck.FIRST if position == 0 else KeyCheck.OLDER
    return KeyCheck.NONE


def encrypt(plaintext: str) -> str:
    return load_keys().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return load_keys().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            f"A stored secret cannot be decrypted with the keys in {KEYS_SETTING}."
        ) from None


# Versioned so a future change of derivation cannot collide with today's fingerprints.
FINGERPRINT_LABEL = b"accounts-pool refresh-token fingerprint v1\x00"


@lru_cache(maxsize=4)
def _fingerprint_keys(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    _multifernet(keys)  # the same checks, the same messages, as encryption
    return tuple(
        hashlib.sha256(FINGERPRINT_LABEL + base64.urlsafe_b64decode(key.strip())).digest()
        for key in keys
    )


def _configured_fingerprint_keys() -> tuple[bytes, ...]:
    return _fingerprint_keys(_configured())


def _hmac(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def fingerprint(secret: str) -> str:
    """A keyed tag for a secret (HMAC-SHA256 under a key derived from the first encryption key):
    tells two refresh tokens apart and reveals none, not even to someone holding a token list
    and a copy of the database."""
    return _hmac(_configured_fingerprint_keys()[0], secret) if secret else ""


def fingerprints(secret: str) -> list[str]:
    """The secret's tag under every configured key, the current one first: a row stored before a
    key rotation still carries the tag of the key that was first then."""
    return [_hmac(key, secret) for key in _configured_fingerprint_keys()] if secret else []


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
