from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .selectors import user_teams


def teams(request: HttpRequest) -> dict[str, Any]:
    """The team switcher's list, for every page."""
    if not request.user.is_authenticated:
        return {}
    return {"user_teams": list(user_teams(request.user))}
