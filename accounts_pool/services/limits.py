"""Limits per consumer key (a lead's): requests per minute, tokens per 5 hours, concurrent
requests, model families. The counters live in Django's cache, so with a shared cache (Redis,
CACHE_URL) they hold across every relay and web process; without one each process counts alone.

Counters are keyed by the key's id and prefix (random per key), so they never mix keys. Tokens
are counted against the limit from the time a limit is set (the cache, not the usage table)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.utils import timezone

from .. import state
from ..models import ConsumerKey, KeyLimitEvent
from .errors import ServiceError

logger = logging.getLogger(__name__)

# A concurrency slot outlives any request it may guard (the relay reads up to 10 minutes
# between two chunks); a process killed mid-request frees its slots after this long.
SLOT_SECONDS = 15 * 60
CONCURRENCY_RETRY = 1  # seconds: a slot frees as soon as any request of the key ends
EVENT_EVERY = 60  # seconds: at most one history row per key and limit this often
HOUR_BUCKET_SECONDS = 6 * 3600  # a token bucket outlives the 5 hours it counts in


@dataclass(frozen=True)
class Refusal:
    limit: state.LimitKind
    retry_after: int  # seconds
    message: str


@dataclass(frozen=True)
class Admission:
    slot: str | None = None  # the concurrency slot held (release it when the request ends)


class KeyLimitExceeded(ServiceError):
    """A consumer key over one of its limits (the API's 429, with Retry-After)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(
            refusal.message,
            code="rate_limited",
            status=429,
            details={"limit": refusal.limit.value, "retry_after": refusal.retry_after},
        )
        self.retry_after = refusal.retry_after


def _base(key: ConsumerKey) -> str:
    return f"ap:limit:{key.pk}:{key.prefix}"


def _refuse(
    key: ConsumerKey, limit: state.LimitKind, retry_after: int, message: str, now: datetime
) -> Refusal:
    refusal = Refusal(limit, retry_after, f"accounts-pool: consumer key '{key.name}' {message}")
    if cache.add(f"{_base(key)}:event:{limit.value}", 1, EVENT_EVERY):
        KeyLimitEvent.objects.create(
            consumer_key=key,
            at=now,
            limit=limit.value,
            message=refusal.message[:300],
            retry_after_seconds=retry_after,
        )
    logger.info("consumer_key=%s limit=%s retry_after=%s", key.pk, limit.value, retry_after)
    return refusal


def _tokens_by_hour(key: ConsumerKey, now: datetime) -> dict[datetime, int]:
    hours = state.token_hours(now)
    names = {f"{_base(key)}:tokens:{h:%Y%m%d%H}": h for h in hours}
    found = cache.get_many(list(names))
    return {names[name]: int(value) for name, value in found.items()}


def limits_admit(
    *, key: ConsumerKey, model: str | None, now: datetime, concurrent: bool
) -> Admission | Refusal:
    """Let one request of `key` in, or say which limit refuses it and for how long. A request
    let in holds a concurrency slot when the key has that limit and `concurrent` is set."""
    limits = key.limits
    if not state.model_allowed(limits, model):
        allowed = ", ".join(limits.model_families)
        return _refuse(
            key,
            state.LimitKind.MODEL_FAMILIES,
            state.MODEL_REFUSED_RETRY,
            f"may use {allowed} models only, not {model or 'an unnamed model'}.",
            now,
        )
    if limits.tokens_per_5h is not None:
        wait = state.tokens_retry_after(_tokens_by_hour(key, now), limits.tokens_per_5h, now)
        if wait is not None:
            return _refuse(
                key,
                state.LimitKind.TOKENS_PER_5H,
                wait,
                f"used its {limits.tokens_per_5h} tokens per 5 hours.",
                now,
            )
    if limits.requests_per_minute is not None:
        counter = f"{_base(key)}:rpm:{now:%Y%m%d%H%M}"
        cache.add(counter, 0, 120)
        if cache.incr(counter) > limits.requests_per_minute:
            return _refuse(
                key,
                state.LimitKind.REQUESTS_PER_MINUTE,
                state.minute_retry_after(now),
                f"made its {limits.requests_per_minute} requests this minute.",
                now,
            )
    if concurrent and limits.concurrent_requests is not None:
        slot = _take_slot(key, limits.concurrent_requests)
        if slot is None:
            return _refuse(
                key,
                state.LimitKind.CONCURRENT_REQUESTS,
                CONCURRENCY_RETRY,
                f"has its {limits.concurrent_requests} requests in flight.",
                now,
            )
        return Admission(slot)
    return Admission()


class Gate:
    """A key's limits for one request, applied when checkout's own statement has read the key
    (checkout_create's `admit`): no read of its own, nothing cached. Refuses with
    KeyLimitExceeded; `admission` is what it let in (release it when the request ends)."""

    def __init__(self, *, model: str | None, concurrent: bool) -> None:
        self.model = model
        self.concurrent = concurrent
        self.admission = Admission()

    def __call__(self, key: ConsumerKey) -> None:
        if not key.limits.any:
            return
        admitted = limits_admit(
            key=key, model=self.model, now=timezone.now(), concurrent=self.concurrent
        )
        if isinstance(admitted, Refusal):
            raise KeyLimitExceeded(admitted)
        self.admission = admitted


def _take_slot(key: ConsumerKey, limit: int) -> str | None:
    """One of the key's `limit` slots, taken atomically (cache add), or None when all are."""
    names = [f"{_base(key)}:slot:{i}" for i in range(limit)]
    taken = cache.get_many(names)
    free = [name for name in names if name not in taken]
    random.shuffle(free)  # processes racing for slots rarely pick the same one
    for name in free:
        if cache.add(name, 1, SLOT_SECONDS):
            return name
    return None


def limits_release(admission: Admission) -> None:
    if admission.slot is not None:
        cache.delete(admission.slot)


def limits_count_tokens(*, key: ConsumerKey, tokens: int, now: datetime) -> None:
    """Add a request's tokens to its key's current hour (only for keys with a token limit)."""
    if key.limit_tokens_per_5h is None or tokens <= 0:
        return
    counter = f"{_base(key)}:tokens:{state.hour_of(now):%Y%m%d%H}"
    cache.add(counter, 0, HOUR_BUCKET_SECONDS)
    cache.incr(counter, tokens)


def consumer_key_set_limits(*, key: ConsumerKey, limits: state.KeyLimits) -> ConsumerKey:
    """A lead's limits for a key (None: no limit; no families: all)."""
    key.limit_requests_per_minute = limits.requests_per_minute
    key.limit_tokens_per_5h = limits.tokens_per_5h
    key.limit_concurrent_requests = limits.concurrent_requests
    key.limit_model_families = ",".join(limits.model_families)
    key.save(
        update_fields=[
            "limit_requests_per_minute",
            "limit_tokens_per_5h",
            "limit_concurrent_requests",
            "limit_model_families",
        ]
    )
    return key


def limit_events_prune(*, now: datetime, older_than: timedelta) -> int:
    deleted, _ = KeyLimitEvent.objects.filter(at__lt=now - older_than).delete()
    return deleted
