"""Secrets shown once, post/redirect/get: the POST that makes a secret keeps it, encrypted with
the app's keys, in the session for exactly one following GET, which takes it out. A reload
shows nothing and creates nothing; the session store never holds the secret in clear."""

from __future__ import annotations

from django.http import HttpRequest

from .. import crypto

KEY = "shown_once"


def keep(request: HttpRequest, kind: str, secret: str) -> None:
    request.session[KEY] = {"kind": kind, "secret": crypto.encrypt(secret)}


def take(request: HttpRequest, kind: str) -> str | None:
    held = request.session.get(KEY)
    if not isinstance(held, dict) or held.get("kind") != kind:
        return None
    del request.session[KEY]
    sealed = held.get("secret")
    if not isinstance(sealed, str):
        return None
    try:
        return crypto.decrypt(sealed)
    except crypto.SecretDecryptionError:
        return None  # sealed under a key since retired: it is simply not shown
