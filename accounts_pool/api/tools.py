"""What tools use: consumer keys, checkout, and reports of the provider's answers."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Status
from ninja.errors import AuthenticationError

from .. import metrics, state
from ..models import ConsumerKey
from ..services import keys
from ..services.checkout import CheckoutResult, NoUsableAccount, UnknownKey, checkout_create
from ..services.limits import (
    Gate,
    consumer_key_set_limits,
    limits_count_tokens,
)
from ..services.reports import report_record
from ..services.usage import usage_record
from ..tasks import enqueue_quota_check, enqueue_refresh
from ..usage_meter import Tokens
from . import access, present
from .auth import CHECKOUT_AUTH, PresentedKey
from .schemas import (
    CheckoutIn,
    CheckoutOut,
    ErrorOut,
    KeyCreatedOut,
    KeyIn,
    KeyOut,
    KeyPatch,
    ReportIn,
    ReportOut,
)

router = Router(tags=["tools"])
LEFT_TO_CYCLE = "recorded; the {task} could not be queued now and the refresh cycle will take it"
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


@router.get("/pools/{pool}/consumer-keys", response={200: list[KeyOut], **ERRORS})
def list_keys(request: HttpRequest, pool: str) -> list[dict[str, Any]]:
    """The pool's keys (never the keys themselves). Leads."""
    found = access.pool_for(access.principal(request), pool, lead=True)
    return [present.key(k) for k in ConsumerKey.objects.filter(pool=found).order_by("name")]


@router.post("/pools/{pool}/consumer-keys", response={201: KeyCreatedOut, **ERRORS})
def create_key(request: HttpRequest, pool: str, payload: KeyIn) -> Status[dict[str, Any]]:
    """A key for a tool: checkout and reports for this pool only. Shown once. Leads."""
    principal = access.principal(request)
    found = access.pool_for(principal, pool, lead=True)
    lead = access.users_only(principal)
    key, secret = keys.consumer_key_create(pool=found, name=payload.name, created_by=lead)
    return Status(201, {**present.key(key), "key": secret})


@router.delete("/pools/{pool}/consumer-keys/{key_id}", response={204: None, **ERRORS})
def revoke_key(request: HttpRequest, pool: str, key_id: int) -> Status[None]:
    """Revoke a key at once. Leads."""
    found = access.pool_for(access.principal(request), pool, lead=True)
    key = ConsumerKey.objects.filter(pool=found, pk=key_id).first()
    if key is None:
        raise access.NotFound("Consumer key")
    keys.consumer_key_revoke(key=key)
    return Status(204, None)


@router.patch("/pools/{pool}/consumer-keys/{key_id}", response={200: KeyOut, **ERRORS})
def patch_key(request: HttpRequest, pool: str, key_id: int, payload: KeyPatch) -> dict[str, Any]:
    """Set the key's `limits` (each null for none): requests per minute, tokens per 5 hours,
    concurrent requests, model families. Over a limit the relay and checkout answer 429 with
    Retry-After. Leads."""
    found = access.pool_for(access.principal(request), pool, lead=True)
    key = ConsumerKey.objects.filter(pool=found, pk=key_id).first()
    if key is None:
        raise access.NotFound("Consumer key")
    given = payload.limits
    consumer_key_set_limits(
        key=key,
        limits=state.KeyLimits(
            requests_per_minute=given.requests_per_minute,
            tokens_per_5h=given.tokens_per_5h,
            concurrent_requests=given.concurrent_requests,
            model_families=tuple(dict.fromkeys(given.model_families or ())),
        ),
    )
    return present.key(key)


@router.post(
    "/pools/{pool}/checkout",
    response={200: CheckoutOut, 503: ErrorOut, **ERRORS},
    auth=CHECKOUT_AUTH,
)
def checkout(request: HttpRequest, pool: str, payload: CheckoutIn) -> dict[str, Any]:
    """Hand out one working credential by the pool's routing (consumer key). `session` keeps a
    tool on one account while it stays usable; `model` skips accounts whose window for that
    model is at its limit. None usable: 503 with Retry-After and every
    account's reasons."""
    started = time.perf_counter()
    try:
        result = _checkout(request, pool, payload.session or "", payload.model or None)
    except NoUsableAccount:
        metrics.CHECKOUT_SECONDS.labels("none_usable").observe(time.perf_counter() - started)
        raise
    metrics.CHECKOUT_SECONDS.labels("ok").observe(time.perf_counter() - started)
    return {
        "checkout_id": result.checkout.pk,
        "account": {"id": result.account.pk, "label": result.account.label},
        "credential": result.credential,
    }


def _checkout(request: HttpRequest, pool: str, session: str, model: str | None) -> CheckoutResult:
    """A consumer key checks out (checkout reads the key itself); a person is refused."""
    presented = getattr(request, "auth", None)
    if not isinstance(presented, PresentedKey):
        # A person: another team's pool is not found, their own pool is refused.
        principal = access.principal(request)
        access.pool_for(principal, pool, key_ok=True)
        access.keys_only(principal)
        raise AssertionError("keys_only passed a principal without a key")
    try:
        return checkout_create(
            key_hash=presented.key_hash,
            pool_slug=pool,
            session=session,
            model=model,
            admit=Gate(model=model, concurrent=False),  # a key over a limit gets a 429
        )
    except UnknownKey:
        raise AuthenticationError() from None


@router.post("/checkouts/{checkout_id}/report", response={200: ReportOut, **ERRORS})
def report(request: HttpRequest, checkout_id: UUID, payload: ReportIn) -> dict[str, Any]:
    """What the provider answered the tool: 429 cools the account down (Retry-After, else the
    reported reset, at most 30 minutes) and updates windows from the rate-limit headers; 401
    queues a refresh of the credential the checkout handed out (a 401 about an older one
    changes nothing: outcome `stale`); 403 with the organisation-policy message blocks it and
    queues a check. A retry (the same `Idempotency-Key` header, or without one the same status
    on the same checkout) records nothing again: `duplicate` true, the first outcome. A broker
    that cannot take the task leaves it to the cycle (`note` says so), never an error."""
    key = access.keys_only(access.principal(request))
    found = access.checkout_for(key, checkout_id)
    retry_after = None if payload.retry_after is None else str(payload.retry_after)
    outcome = report_record(
        checkout=found,
        key=key,
        status=payload.status,
        retry_after=retry_after,
        headers=payload.headers or {},
        message=payload.message or "",
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    if payload.usage is not None:
        _count_reported(key, found.account_id, payload)
    queued = []
    notes = [outcome.note] if outcome.note else []
    if outcome.queue_refresh:
        if enqueue_refresh(found.account_id, version=outcome.refresh_version):
            queued.append("refresh")
        else:
            notes.append(LEFT_TO_CYCLE.format(task="refresh"))
    if outcome.queue_quota_check:
        if enqueue_quota_check(found.account_id, force=True):
            queued.append("quota_check")
        else:
            notes.append(LEFT_TO_CYCLE.format(task="quota check"))
    return {
        "outcome": outcome.outcome,
        "cooldown_until": outcome.cooldown_until,
        "queued": queued,
        "windows_updated": outcome.windows,
        "duplicate": outcome.duplicate,
        "note": "; ".join(notes),
    }


def _count_reported(key: ConsumerKey, account_id: int, payload: ReportIn) -> None:
    """A tool's report of what an answer used counts as a relayed answer's usage does."""
    assert payload.usage is not None
    tokens = Tokens(**payload.usage.model_dump())
    now = timezone.now()
    usage_record(
        pool_id=key.pool_id,
        key_id=key.pk,
        account_id=account_id,
        model=payload.model,
        tokens=tokens,
        status=payload.status,
        duration_ms=payload.duration_ms or 0,
        now=now,
    )
    limits_count_tokens(key=key, tokens=tokens.total, now=now)
