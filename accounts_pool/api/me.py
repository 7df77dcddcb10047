"""The caller's own personal API tokens: create (shown once), list, revoke (DESIGN.md 4.3)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Status

from ..models import ApiToken
from ..services import keys
from . import access
from .access import NotFound
from .schemas import ApiTokenCreated, ApiTokenIn, ApiTokenOut, ErrorOut

router = Router(tags=["me"])
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}


def _token_out(token: ApiToken) -> dict[str, object]:
    now = timezone.now()
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "active": token.revoked_at is None and (token.expires_at is None or token.expires_at > now),
    }


@router.get("/me/tokens", response={200: list[ApiTokenOut], **ERRORS})
def list_tokens(request: HttpRequest) -> list[dict[str, object]]:
    """The caller's personal API tokens (never the secrets): expiry, last use, revocation."""
    user = access.users_only(access.principal(request))
    return [_token_out(token) for token in keys.api_tokens_of(user)]


@router.post("/me/tokens", response={201: ApiTokenCreated, **ERRORS})
def create_token(request: HttpRequest, payload: ApiTokenIn) -> Status[dict[str, object]]:
    """A new token acting with the caller's roles, expiring after `expires_in_days` (90 by
    default, null for never). The secret is in this answer only."""
    user = access.users_only(access.principal(request))
    token, secret = keys.api_token_create(
        user=user, name=payload.name, days=payload.expires_in_days
    )
    return Status(201, {**_token_out(token), "token": secret})


@router.delete("/me/tokens/{token_id}", response={204: None, **ERRORS})
def revoke_token(request: HttpRequest, token_id: int) -> Status[None]:
    """Revoke one of the caller's tokens: it fails from the next request on."""
    user = access.users_only(access.principal(request))
    if not keys.api_token_revoke(user=user, token_id=token_id):
        raise NotFound("token")
    return Status(204, None)
