"""Secrets shown once, post/redirect/get: the POST that makes a secret keeps it in the session
for exactly one following GET, which takes it out. A reload shows nothing and creates nothing."""

from __future__ import annotations

from django.http import HttpRequest

KEY = "shown_once"


def keep(request: HttpRequest, kind: str, secret: str) -> None:
    request.session[KEY] = {"kind": kind, "secret": secret}


def take(request: HttpRequest, kind: str) -> str | None:
    held = request.session.get(KEY)
    if not isinstance(held, dict) or held.get("kind") != kind:
        return None
    del request.session[KEY]
    secret = held.get("secret")
    return secret if isinstance(secret, str) else None
